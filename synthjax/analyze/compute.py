"""Speedup net of generation compute: what synthetic data costs to make, charged to the mixture.

A mixture trained on D tokens at synthetic share s costs 6 N D training FLOPs plus the
generator's FLOPs for the synthetic tokens it used: 2 x generator parameters per prompt and
output token the generator processed, i.e. `flops_per_token` per synthetic training token
(2 P x generator tokens / kept synthetic training tokens). A synthetic set is made once; if k
training runs share it, each is charged 1/k of it. Natural data costs 6 N D_natural. So

    compute speedup   = D_natural * 6N / (6N D + f s D / k)  =  speedup / (1 + f s / (6 N k))
    break-even runs   k* = f s / (6 N (speedup - 1))    (the set pays from k* runs sharing it)

with speedup the tokens-to-loss speedup and k = 1 in the compute speedup shown. A speedup of 1
or less never pays. The synthetic tokens used are s D, capped at the set's size when the set
was read more than once (its repeats were generated once).
"""

import math
from typing import Dict, Optional, Sequence, Tuple


def flops_per_token(
    generator_params: float, generator_tokens: float, training_tokens: float
) -> float:
  """Generator FLOPs per synthetic training token: 2 P per token the generator processed
  (prompts and outputs, kept or rejected) over the kept text's training tokens."""
  return 2.0 * generator_params * generator_tokens / training_tokens


def synthetic_tokens(share: float, D: float, set_tokens: Optional[float]) -> float:
  used = share * D
  return min(used, set_tokens) if set_tokens else used


def compute_speedup(
    speedup: float, N: float, D: float, share: float, cost: Dict, runs_sharing: int = 1
) -> float:
  """Natural training FLOPs over the mixture's training plus its share of generation FLOPs."""
  generation = cost["flops_per_token"] * synthetic_tokens(share, D, cost.get("set_tokens"))
  return speedup * 6.0 * N * D / (6.0 * N * D + generation / runs_sharing)


def break_even_runs(speedup: float, N: float, D: float, share: float, cost: Dict) -> float:
  """Runs that must share the synthetic set before the mixture costs less than natural data
  for the same loss (inf when the speedup is 1 or less)."""
  if not speedup > 1 or math.isinf(speedup):
    return math.inf if not speedup > 1 else 0.0
  generation = cost["flops_per_token"] * synthetic_tokens(share, D, cost.get("set_tokens"))
  return generation / (6.0 * N * D * (speedup - 1.0))


def net_rows(rows: Sequence[dict], N: float, share: float, cost: Dict) -> None:
  """Adds compute_speedup (with its interval: a fixed factor per row, so the interval's ends
  map to its ends) and break_even_runs (decreasing in the speedup: the ends swap) to speedup
  rows that natural data's fit reaches within its range."""
  for r in rows:
    if r["natural_reach"] != "within":
      r.update(
          compute_speedup=None,
          compute_interval=None,
          break_even_runs=None,
          break_even_interval=None,
      )
      continue
    factor = compute_speedup(1.0, N, r["D"], share, cost)
    iv: Optional[Tuple[float, float]] = r["interval"]
    r["compute_speedup"] = r["speedup"] * factor
    r["compute_interval"] = (iv[0] * factor, iv[1] * factor) if iv else None
    r["break_even_runs"] = break_even_runs(r["speedup"], N, r["D"], share, cost)
    r["break_even_interval"] = (
        (
            break_even_runs(iv[1], N, r["D"], share, cost),
            break_even_runs(iv[0], N, r["D"], share, cost),
        )
        if iv
        else None
    )


def parse_option(text: str) -> Tuple[str, Dict]:
  """'KIND=PARAMS:TOKENS' (the --generation option): the generator's parameters, and generator
  tokens (prompt and output) per synthetic training token."""
  from synthjax.errors import UserError

  try:
    kind, rest = text.split("=", 1)
    params, tokens = (float(x) for x in rest.split(":"))
  except ValueError:
    raise UserError(
        f"--generation {text!r}: expected KIND=PARAMS:TOKENS, e.g. rephrased_hq=8e9:2.5"
    ) from None
  if not (params > 0 and tokens > 0):
    raise UserError(f"--generation {text!r}: PARAMS and TOKENS must be positive")
  return kind, {
      "generator_params": params,
      "tokens_per_token": tokens,
      "flops_per_token": 2.0 * params * tokens,
  }
