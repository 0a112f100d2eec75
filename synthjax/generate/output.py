"""A generation job's output folder: OUT/manifest.json (the job's settings, then its totals),
OUT/shard-NAME.jsonl (kept chunks) and OUT/rejected/shard-NAME.jsonl, and OUT/hosts/H-i.json
(host i of H done)."""

import json
from typing import Dict, List

from synthjax import jsonl, storage
from synthjax.errors import UserError


def check_manifest(out_dir: str, sig: dict) -> None:
  path = storage.join(out_dir, "manifest.json")
  if not storage.exists(path):
    storage.write_json(path, {"job": sig})  # every host writes the same content
    return
  old = storage.read_json(path).get("job", {})
  diff = [
      f"{k}={old.get(k)!r} vs {sig.get(k)!r}"
      for k in sorted(set(old) | set(sig))
      if old.get(k) != sig.get(k)
  ]
  if diff:
    raise UserError(
        f"{out_dir} holds another job's manifest ({'; '.join(diff[:3])}); use a new output dir"
    )


def shard_path(out_dir: str, name: str, rejected: bool = False) -> str:
  base = f"shard-{name}.jsonl"
  return storage.join(out_dir, "rejected", base) if rejected else storage.join(out_dir, base)


def host_path(out_dir: str, hosts: int, index: int) -> str:
  return storage.join(out_dir, "hosts", f"{hosts}-{index}.json")


def write_jsonl(path: str, records: List[dict]) -> None:
  storage.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def finalize(out_dir: str, hosts: int) -> dict:
  """Totals into the manifest once every host's part is done (any host may be the last)."""
  path = storage.join(out_dir, "manifest.json")
  manifest = storage.read_json(path)
  host_files = [host_path(out_dir, hosts, i) for i in range(hosts)]
  if not all(storage.exists(p) for p in host_files):
    return manifest
  names = sorted(n for p in host_files for n in storage.read_json(p)["shards"])
  chunks, kept, tokens, prompt_tokens = 0, 0, 0, 0
  reasons: Dict[str, int] = {}
  for name in names:
    for rejected in (False, True):
      for _, rec in jsonl.records(shard_path(out_dir, name, rejected)):
        if isinstance(rec, dict):
          chunks += 1
          tokens += rec["output_tokens"]
          prompt_tokens += rec["prompt_tokens"]
          if rejected:
            reasons[rec["rejected"]] = reasons.get(rec["rejected"], 0) + 1
          else:
            kept += 1
  manifest.update(
      chunks=chunks,
      shards=len(names),
      kept=kept,
      rejected=reasons,
      output_tokens=tokens,
      prompt_tokens=prompt_tokens,
      complete=True,
  )
  storage.write_json(path, manifest)
  return manifest


def require_complete(out_dir: str, kind: str) -> dict:
  """The manifest of a finished generation job, or one line saying what is missing."""
  path = storage.join(out_dir, "manifest.json")
  manifest = storage.read_json(path) if storage.exists(path) else {}
  if not manifest.get("complete"):
    done = storage.glob(storage.join(out_dir, "hosts", "*.json"))
    raise UserError(
        f"{kind}: generation in {out_dir} is not complete ({len(done)} host parts "
        "done); run the generate stage (on every host) first"
    )
  return manifest


def kept_files(out_dir: str) -> str:
  """The glob the data layer reads as this job's synthetic text."""
  return storage.join(out_dir, "shard-*.jsonl")


def all_records(out_dir: str) -> List[dict]:
  out: List[dict] = []
  for pattern in ("shard-*.jsonl", "rejected/shard-*.jsonl"):
    for path in storage.glob(storage.join(out_dir, pattern)):
      out.extend(rec for _, rec in jsonl.records(path) if isinstance(rec, dict))
  return out
