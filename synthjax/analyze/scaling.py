"""Scaling-law fits in log space, Hoffmann et al. (2022) "Approach 3" style.

A law is log L = LSE(e, a_1 - alpha_1 x_1, ..., a_k - alpha_k x_k) with x_i = log of a
resource (tokens D; or parameters N and tokens D), i.e. L = E + sum_i A_i / X_i^alpha_i with
E = exp(e), A_i = exp(a_i). The objective is the SUM of Huber losses (delta 1e-3) of the
log-residuals, minimised from a grid of starts.

Speed: all starts are screened together by a vectorized BFGS (numpy, float64: the parameter
space is only 3 or 5 wide, so a full inverse Hessian per start is cheap), then the best few are
polished with scipy's L-BFGS-B, and the best result kept.
"""
import dataclasses
import itertools
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import optimize

from synthjax.errors import UserError

HUBER_DELTA = 1e-3
E_GRID = np.arange(-1.0, 1.0 + 1e-9, 0.5)
A_GRID = np.arange(0.0, 25.0 + 1e-9, 5.0)
ALPHA_GRID = np.arange(0.0, 2.0 + 1e-9, 0.5)


def _huber(r, delta=HUBER_DELTA):
  a = np.abs(r)
  return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _huber_grad(r, delta=HUBER_DELTA):
  return np.clip(r, -delta, delta)


def _objective_and_grad(theta_SxP, X_NxK, logL_N, delta):
  """theta = (e, a_1, alpha_1, ..., a_k, alpha_k) per start; returns (S,), (S, P)."""
  S, P = theta_SxP.shape
  K = X_NxK.shape[1]
  e = theta_SxP[:, 0]
  a = theta_SxP[:, 1::2]       # S x K
  alpha = theta_SxP[:, 2::2]   # S x K
  terms = np.concatenate([
      np.broadcast_to(e[:, None, None], (S, X_NxK.shape[0], 1)),
      a[:, None, :] - alpha[:, None, :] * X_NxK[None, :, :]], axis=2)   # S x N x (K+1)
  top = terms.max(axis=2, keepdims=True)
  weights = np.exp(terms - top)
  total = weights.sum(axis=2, keepdims=True)
  lse = (top + np.log(total))[:, :, 0]
  weights /= total
  r = lse - logL_N[None, :]
  f = _huber(r, delta).sum(axis=1)
  dr = _huber_grad(r, delta)  # S x N
  grad = np.empty((S, P))
  grad[:, 0] = (dr * weights[:, :, 0]).sum(axis=1)
  for k in range(K):
    w = weights[:, :, k + 1] * dr
    grad[:, 1 + 2 * k] = w.sum(axis=1)
    grad[:, 2 + 2 * k] = -(w * X_NxK[None, :, k]).sum(axis=1)
  return f, grad


def _batched_bfgs(theta, fun, iters=150, gtol=1e-9):
  """Minimise every row of theta at once with BFGS and a backtracking Armijo line search.
  Only rows still moving are evaluated, so converged starts cost nothing."""
  theta = theta.copy()
  S, P = theta.shape
  H = np.broadcast_to(np.eye(P), (S, P, P)).copy()
  f, g = fun(theta)
  active = np.flatnonzero(np.isfinite(f))
  for _ in range(iters):
    if active.size == 0:
      break
    th, fa, ga, Ha = theta[active], f[active], g[active], H[active]
    direction = -np.einsum("spq,sq->sp", Ha, ga)
    slope = (direction * ga).sum(1)
    bad = slope >= 0  # not a descent direction: reset to steepest descent
    Ha[bad] = np.eye(P)
    direction[bad] = -ga[bad]
    slope[bad] = -(ga[bad] ** 2).sum(1)
    step = np.ones(active.size)
    new_th, new_f, new_g = th.copy(), fa.copy(), ga.copy()
    pending = np.arange(active.size)
    for _ in range(40):
      trial = th[pending] + step[pending, None] * direction[pending]
      tf, tg = fun(trial)
      ok = np.isfinite(tf) & (tf <= fa[pending] + 1e-4 * step[pending] * slope[pending])
      done = pending[ok]
      new_th[done], new_f[done], new_g[done] = trial[ok], tf[ok], tg[ok]
      pending = pending[~ok]
      if pending.size == 0:
        break
      step[pending] *= 0.5
    moved = np.ones(active.size, bool)
    moved[pending] = False
    s, y = new_th - th, new_g - ga
    sy = (s * y).sum(1)
    update = moved & (sy > 1e-18)
    if update.any():
      rho = 1.0 / sy[update]
      V = np.eye(P) - rho[:, None, None] * np.einsum("sp,sq->spq", s[update], y[update])
      Ha[update] = (np.einsum("spq,sqr,str->spt", V, Ha[update], V)
                    + rho[:, None, None] * np.einsum("sp,sq->spq", s[update], s[update]))
    theta[active], f[active], g[active], H[active] = new_th, new_f, new_g, Ha
    keep = moved & (np.abs(new_g).max(1) > gtol) & (fa - new_f > 1e-14 * np.abs(fa))
    active = active[keep]
  return theta, f


@dataclasses.dataclass
class Fit:
  """A fitted law. `params` holds E plus A_i / alpha_i per resource, under the names given."""
  names: List[str]            # resource names, e.g. ["N", "D"] or ["D"]
  theta: np.ndarray           # (e, a_1, alpha_1, ...)
  objective: float
  n_points: int

  @property
  def params(self) -> Dict[str, float]:
    out = {"E": float(np.exp(self.theta[0]))}
    coeff = {"N": "A", "D": "B"}
    expo = {"N": "alpha", "D": "beta"}
    for i, name in enumerate(self.names):
      out[coeff.get(name, f"A_{name}")] = float(np.exp(self.theta[1 + 2 * i]))
      out[expo.get(name, f"alpha_{name}")] = float(self.theta[2 + 2 * i])
    return out

  def predict(self, **resources) -> np.ndarray:
    total = np.exp(self.theta[0])
    for i, name in enumerate(self.names):
      x = np.asarray(resources[name], np.float64)
      total = total + np.exp(self.theta[1 + 2 * i]) / x ** self.theta[2 + 2 * i]
    return total

  def to_json(self) -> dict:
    return dict(self.params, objective=self.objective, n_points=self.n_points)


def _validate(resources: Dict[str, np.ndarray], loss: np.ndarray, n_params: int, what: str):
  for name, x in resources.items():
    bad = ~np.isfinite(x) | (x <= 0)
    if bad.any():
      raise UserError(f"{what}: {name} must be positive, got {x[bad][0]!r} "
                      f"(row {int(np.argmax(bad))})")
  bad = ~np.isfinite(loss) | (loss <= 0)
  if bad.any():
    raise UserError(f"{what}: loss must be a positive number, got {loss[bad][0]!r} "
                    f"(row {int(np.argmax(bad))})")
  if len(loss) < n_params:
    raise UserError(f"{what}: {len(loss)} points cannot determine {n_params} parameters")


def grid_starts(k: int) -> np.ndarray:
  rows = [(e, *itertools.chain(*pairs)) for e in E_GRID
          for pairs in itertools.product(itertools.product(A_GRID, ALPHA_GRID), repeat=k)]
  return np.asarray(rows, np.float64)


def objective(theta: Sequence[float], resources: Dict[str, np.ndarray], loss: np.ndarray,
              delta: float = HUBER_DELTA) -> float:
  X = np.log(np.stack([np.asarray(v, np.float64) for v in resources.values()], 1))
  f, _ = _objective_and_grad(np.asarray(theta, np.float64)[None], X, np.log(loss), delta)
  return float(f[0])


def theta_from_params(names: Sequence[str], params: Dict[str, float]) -> np.ndarray:
  coeff = {"N": ("A", "alpha"), "D": ("B", "beta")}
  theta = [np.log(params["E"])]
  for name in names:
    c, x = coeff[name]
    theta += [np.log(params[c]), params[x]]
  return np.asarray(theta)


def fit(resources: Dict[str, Sequence[float]], loss: Sequence[float],
        delta: float = HUBER_DELTA, starts: Optional[np.ndarray] = None, polish: int = 8,
        what: str = "fit") -> Fit:
  """Fit L = E + sum_i A_i / X_i^alpha_i to points; resources maps name -> values."""
  names = list(resources)
  res = {k: np.asarray(v, np.float64) for k, v in resources.items()}
  loss = np.asarray(loss, np.float64)
  _validate(res, loss, 1 + 2 * len(names), what)
  X = np.log(np.stack([res[k] for k in names], 1))
  logL = np.log(loss)
  fun = lambda t: _objective_and_grad(t, X, logL, delta)
  starts = grid_starts(len(names)) if starts is None else np.atleast_2d(starts)
  if len(starts) > polish:  # screen a grid of starts; a few given starts go straight to polish
    screened, f = _batched_bfgs(starts, fun)
  else:
    screened, f = starts, fun(starts)[0]
  order = np.argsort(np.where(np.isfinite(f), f, np.inf))[:polish]
  best_theta, best_f = screened[order[0]], f[order[0]]
  for i in order:
    out = optimize.minimize(lambda t: tuple(x[0] for x in fun(t[None])), screened[i],
                            jac=True, method="L-BFGS-B",
                            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000})
    if out.fun < best_f:
      best_theta, best_f = out.x, float(out.fun)
  return Fit(names, np.asarray(best_theta), float(best_f), len(loss))


def tokens_for_loss(params: Dict[str, float], target: float) -> float:
  """Invert L(D) = E + B / D^beta: tokens needed to reach `target` (inf if never)."""
  if target <= params["E"]:
    return float("inf")
  return float((params["B"] / (target - params["E"])) ** (1.0 / params["beta"]))
