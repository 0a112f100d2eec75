"""Scaling-law fits in log space, Hoffmann et al. (2022) "Approach 3" style.

A law is log L = LSE(e, a_1 - alpha_1 x_1, ..., a_k - alpha_k x_k) with x_i = log of a
resource (tokens D; or parameters N and tokens D), i.e. L = E + sum_i A_i / X_i^alpha_i with
E = exp(e), A_i = exp(a_i). The objective is the SUM of Huber losses (delta 1e-3) of the
log-residuals, minimised from a grid of starts.

Speed: every start of every fit is one row of a vectorized BFGS (numpy, float64: the parameter
space is only 3 or 5 wide, so a full inverse Hessian per row is cheap), so a report's hundreds
of fits and their bootstrap refits run as a few array programs, not a Python loop per fit;
each fit's best few rows are then run on to convergence and the best kept.
"""

import dataclasses
import itertools
from typing import Dict, List, Optional, Sequence

import numpy as np

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


def _objective_and_grad(theta_RxP, X_RxNxK, logL_RxN, w_RxN, delta):
  """theta = (e, a_1, alpha_1, ..., a_k, alpha_k) per row, each row with its own points (w = 1
  for a point of the row's fit, 0 for padding); returns (R,), (R, P)."""
  R, P = theta_RxP.shape
  K = X_RxNxK.shape[2]
  e = theta_RxP[:, 0]
  a = theta_RxP[:, 1::2]  # R x K
  alpha = theta_RxP[:, 2::2]  # R x K
  terms = np.concatenate(
      [
          np.broadcast_to(e[:, None, None], (R, X_RxNxK.shape[1], 1)),
          a[:, None, :] - alpha[:, None, :] * X_RxNxK,
      ],
      axis=2,
  )  # R x N x (K+1)
  top = terms.max(axis=2, keepdims=True)
  weights = np.exp(terms - top)
  total = weights.sum(axis=2, keepdims=True)
  lse = (top + np.log(total))[:, :, 0]
  weights /= total
  r = lse - logL_RxN
  f = (_huber(r, delta) * w_RxN).sum(axis=1)
  dr = _huber_grad(r, delta) * w_RxN  # R x N
  grad = np.empty((R, P))
  grad[:, 0] = (dr * weights[:, :, 0]).sum(axis=1)
  for k in range(K):
    wk = weights[:, :, k + 1] * dr
    grad[:, 1 + 2 * k] = wk.sum(axis=1)
    grad[:, 2 + 2 * k] = -(wk * X_RxNxK[:, :, k]).sum(axis=1)
  return f, grad


def _batched_bfgs(theta, fun, iters=150, gtol=1e-9, ftol=1e-14):
  """Minimise every row of theta at once with BFGS and a backtracking Armijo line search;
  fun(theta_rows, rows) evaluates the given rows (each row may be its own problem). Only rows
  still moving are evaluated, so converged rows cost nothing."""
  theta = theta.copy()
  S, P = theta.shape
  H = np.broadcast_to(np.eye(P), (S, P, P)).copy()
  f, g = fun(theta, np.arange(S))
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
      tf, tg = fun(trial, active[pending])
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
      Ha[update] = np.einsum("spq,sqr,str->spt", V, Ha[update], V) + rho[:, None, None] * np.einsum(
          "sp,sq->spq", s[update], s[update]
      )
    theta[active], f[active], g[active], H[active] = new_th, new_f, new_g, Ha
    keep = moved & (np.abs(new_g).max(1) > gtol) & (fa - new_f > ftol * np.abs(fa))
    active = active[keep]
  return theta, f


class Rows:
  """Many fits' data side by side, one row per (problem, start): what _batched_bfgs runs on.
  A problem is (X [points, K] log resources, logL [points], w [points] 0/1)."""

  def __init__(self, problems, row_problem, delta=HUBER_DELTA):
    n = max(len(p[1]) for p in problems)
    K = problems[0][0].shape[1]
    X = np.ones((len(problems), n, K))
    logL = np.zeros((len(problems), n))
    w = np.zeros((len(problems), n))
    for i, (x, l, wi) in enumerate(problems):
      X[i, : len(l)], logL[i, : len(l)], w[i, : len(l)] = x, l, wi
    self.X, self.logL, self.w = X, logL, w
    self.row_problem = np.asarray(row_problem)
    self.delta = delta

  def __call__(self, theta, rows):
    p = self.row_problem[rows]
    return _objective_and_grad(theta, self.X[p], self.logL[p], self.w[p], self.delta)


DESCEND = 32  # starts per problem that descend after every start is evaluated
EVAL_CHUNK = 20000  # rows evaluated at once when screening (bounds the screen's memory)


def minimize_many(problems, starts, polish: int = 8, delta: float = HUBER_DELTA):
  """Fit every problem at once from starts [S, P] (shared) or [problems, S, P] (each its own):
  the objective at every start is evaluated, each problem's best DESCEND starts descend
  together in one batched BFGS, and the best `polish` of those are run on to convergence
  (tighter tolerances, more iterations); the best result is kept. Returns thetas [problems, P]
  and objectives [problems]."""
  starts = np.asarray(starts, np.float64)
  if starts.ndim < 3:
    starts = np.broadcast_to(np.atleast_2d(starts), (len(problems),) + np.atleast_2d(starts).shape)
  n, S, P = starts.shape
  theta = starts.reshape(n * S, P)
  screen = Rows(problems, np.repeat(np.arange(n), S), delta)
  f = np.concatenate(
      [
          screen(theta[i : i + EVAL_CHUNK], np.arange(i, min(i + EVAL_CHUNK, n * S)))[0]
          for i in range(0, n * S, EVAL_CHUNK)
      ]
  )
  for keep, iters, gtol, ftol in ((DESCEND, 150, 1e-9, 1e-14), (polish, 2000, 1e-12, 1e-15)):
    width = len(f) // n
    f = np.where(np.isfinite(f), f, np.inf).reshape(n, width)
    best = np.argsort(f, axis=1, kind="stable")[:, :keep]
    theta = theta.reshape(n, width, P)[np.arange(n)[:, None], best].reshape(-1, P)
    rows = Rows(problems, np.repeat(np.arange(n), best.shape[1]), delta)
    theta, f = _batched_bfgs(theta, rows, iters=iters, gtol=gtol, ftol=ftol)
  f = np.where(np.isfinite(f), f, np.inf).reshape(n, -1)
  winner = np.argmin(f, axis=1)
  return theta.reshape(n, f.shape[1], P)[np.arange(n), winner], f[np.arange(n), winner]


def problem(resources: Dict[str, np.ndarray], loss: np.ndarray, keep=None):
  """(X, logL, w) of one fit; keep: a 0/1 mask of the points the fit uses (all by default)."""
  X = np.log(np.stack([np.asarray(resources[k], np.float64) for k in resources], 1))
  w = np.ones(len(loss)) if keep is None else np.asarray(keep, np.float64)
  return X, np.log(np.asarray(loss, np.float64)), w


@dataclasses.dataclass
class Fit:
  """A fitted law. `params` holds E plus A_i / alpha_i per resource, under the names given."""

  names: List[str]  # resource names, e.g. ["N", "D"] or ["D"]
  theta: np.ndarray  # (e, a_1, alpha_1, ...)
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
      raise UserError(
          f"{what}: {name} must be positive, got {x[bad][0]!r} (row {int(np.argmax(bad))})"
      )
  bad = ~np.isfinite(loss) | (loss <= 0)
  if bad.any():
    raise UserError(
        f"{what}: loss must be a positive number, got {loss[bad][0]!r} "
        f"(row {int(np.argmax(bad))})"
    )
  if len(loss) < n_params:
    raise UserError(f"{what}: {len(loss)} points cannot determine {n_params} parameters")


def grid_starts(k: int) -> np.ndarray:
  rows = [
      (e, *itertools.chain(*pairs))
      for e in E_GRID
      for pairs in itertools.product(itertools.product(A_GRID, ALPHA_GRID), repeat=k)
  ]
  return np.asarray(rows, np.float64)


def objective(
    theta: Sequence[float],
    resources: Dict[str, np.ndarray],
    loss: np.ndarray,
    delta: float = HUBER_DELTA,
) -> float:
  X, logL, w = problem(resources, np.asarray(loss, np.float64))
  f, _ = _objective_and_grad(
      np.asarray(theta, np.float64)[None], X[None], logL[None], w[None], delta
  )
  return float(f[0])


def theta_from_params(names: Sequence[str], params: Dict[str, float]) -> np.ndarray:
  coeff = {"N": ("A", "alpha"), "D": ("B", "beta")}
  theta = [np.log(params["E"])]
  for name in names:
    c, x = coeff[name]
    theta += [np.log(params[c]), params[x]]
  return np.asarray(theta)


def fit(
    resources: Dict[str, Sequence[float]],
    loss: Sequence[float],
    delta: float = HUBER_DELTA,
    starts: Optional[np.ndarray] = None,
    polish: int = 8,
    what: str = "fit",
) -> Fit:
  """Fit L = E + sum_i A_i / X_i^alpha_i to points; resources maps name -> values."""
  names = list(resources)
  res = {k: np.asarray(v, np.float64) for k, v in resources.items()}
  loss_a = np.asarray(loss, np.float64)
  _validate(res, loss_a, 1 + 2 * len(names), what)
  starts = grid_starts(len(names)) if starts is None else starts
  theta, f = minimize_many([problem(res, loss_a)], starts, polish, delta)
  return Fit(names, theta[0], float(f[0]), len(loss_a))


def tokens_for_loss(params: Dict[str, float], target: float) -> float:
  """Invert L(D) = E + B / D^beta: tokens needed to reach `target` (inf if never)."""
  if target <= params["E"]:
    return float("inf")
  return float((params["B"] / (target - params["E"])) ** (1.0 / params["beta"]))
