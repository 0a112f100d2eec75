"""What the models were trained on: per synthetic kind, how much of the generated text was
kept, why the rest was dropped, how faithful the kept text is to its source, and examples."""

import json
from typing import Dict, List

import numpy as np

from synthjax import storage


def _records(out_dir: str, pattern: str) -> List[dict]:
  out: List[dict] = []
  for path in storage.glob(storage.join(out_dir, pattern)):
    out.extend(json.loads(line) for line in storage.read_text(path).splitlines() if line.strip())
  return out


def generator_tokens(out_dir: str) -> int:
  """Tokens the generator processed for a job: every output's prompt and output, kept or
  rejected (what its compute is charged by), from its manifest's totals."""
  manifest = storage.read_json(storage.join(out_dir, "manifest.json"))
  if "prompt_tokens" in manifest:
    return manifest["prompt_tokens"] + manifest["output_tokens"]
  # a job finished before its manifest counted prompt tokens: its records
  return sum(
      r["prompt_tokens"] + r["output_tokens"]
      for pattern in ("shard-*.jsonl", "rejected/shard-*.jsonl")
      for r in _records(out_dir, pattern)
  )


def summarize(kind: str, out_dir: str, examples: int = 3) -> dict:
  """A generation job's output (generate/job.py) in numbers and a few examples."""
  kept = _records(out_dir, "shard-*.jsonl")
  rejected = _records(out_dir, "rejected/shard-*.jsonl")
  reasons: Dict[str, int] = {}
  for r in rejected:
    reasons[r["rejected"]] = reasons.get(r["rejected"], 0) + 1
  faith = np.asarray([r["faithfulness"] for r in kept if "faithfulness" in r], float)
  order = sorted((r for r in kept if "faithfulness" in r), key=lambda r: r["faithfulness"])
  picks = [order[int(q * (len(order) - 1))] for q in np.linspace(0, 1, examples)] if order else []
  total = len(kept) + len(rejected)
  return {
      "kind": kind,
      "dir": out_dir,
      "outputs": total,
      "kept": len(kept),
      "kept_share": len(kept) / total if total else 0.0,
      "rejected": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
      "trimmed": sum("raw" in r for r in kept),
      "faithfulness": faith.tolist(),
      "faithfulness_quantiles": (
          dict(zip(("p10", "p50", "p90"), np.percentile(faith, [10, 50, 90]).round(3).tolist()))
          if len(faith)
          else {}
      ),
      "examples": [
          {"id": r["id"], "faithfulness": r["faithfulness"], "text": r["text"]} for r in picks
      ],
      "rejected_examples": [
          {"id": r["id"], "reason": r["rejected"], "text": r["text"]}
          for r in rejected
          if r["rejected"] in ("commentary", "unfaithful")
      ][:2],
  }
