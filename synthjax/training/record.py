"""The run record (run.json): what was trained on what, and its per-domain evaluation."""

import jax

from synthjax import storage
from synthjax.models.config import ModelConfig
from synthjax.models.flops import param_count, train_flops_per_token
from synthjax.training.config import TrainConfig


def run_record(
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    source,
    steps: int,
    final_eval: dict,
    details: dict,
    wall: float,
    **extra,
) -> dict:
  """The run record: what was trained on what, and its per-domain evaluation."""
  return {
      "model": model_cfg.name,
      "params": param_count(model_cfg),
      "tokens": steps * cfg.batch_size * cfg.seq_len,
      "steps": steps,
      "mixture": getattr(source, "mixture", "unknown"),
      "shares": getattr(source, "shares", {}),
      "seed": cfg.seed,
      "losses": {
          k.split("/")[1]: v
          for k, v in final_eval.items()
          if k.endswith("/loss") and not k.startswith("eval/avg")
      },
      "loss": final_eval.get("eval/avg/loss"),
      "eval": details,
      "repeats": getattr(source, "repeats", {}),
      "vocabulary": getattr(source, "vocabulary", ""),
      "seq_len": cfg.seq_len,
      "flops_per_token": train_flops_per_token(model_cfg, cfg.seq_len),
      "wall_s": wall,
      "hosts": jax.process_count(),
      "model_dir": storage.abspath(cfg.model_dir),
      **extra,
  }
