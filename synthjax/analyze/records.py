"""Run records: what the analysis reads.

Sources: a study or train output folder (every MODEL_DIR/run.json below it), a JSONL file of
run.json objects, or a CSV with columns
    N, D        parameters and training tokens
    mixture     the mixture's name: runs with the same (mixture, N, D) are one cell
    kind        the synthetic data kind ('natural' for the baseline; needed for share sweeps,
                e.g. 'rephrased_hq')
    share       token share of synthetic data (0 for natural)
    seed        the training seed (runs of one cell differ only in it; default 0)
    loss        mean validation loss, and loss/<domain> per domain (optional)

Normalised record: {"N", "D", "mixture", "kind", "share", "seed", "loss", "domains": {name:
loss}, "docs": {name: (per-document loss sums, per-document tokens)}, "baselines": {name:
unigram loss}, "bits_per_byte": {name: bpb}, "repeats": {task: passes}, "path"}.
"""

import csv
import hashlib
import io
import json
import math
from typing import Dict, List

from synthjax import jsonl, storage
from synthjax.errors import UserError

NATURAL = "natural"


def _number(value, field: str, where: str) -> float:
  try:
    x = float(value)
  except (TypeError, ValueError):
    raise UserError(f"{where}: field {field!r} is not a number: {value!r}") from None
  if math.isnan(x):
    raise UserError(f"{where}: field {field!r} is NaN")
  return x


def _kind_and_share(rec: dict, where: str):
  shares = rec.get("shares")
  if shares:
    natural = float(shares.get(NATURAL, 0.0))
    synthetic = {k: v for k, v in shares.items() if k != NATURAL and v > 0}
    kind = "+".join(sorted(synthetic)) if synthetic else NATURAL
    return kind, 1.0 - natural
  if "share" in rec:
    share = _number(rec["share"], "share", where)
    kind = rec.get("kind") or (NATURAL if share == 0 else rec.get("mixture", "synthetic"))
    return kind, share
  raise UserError(f"{where}: missing field 'shares' (or 'share')")


# A run record names its model's parameters `params` and its training tokens `tokens`; records
# and tables of earlier versions say `N` and `D`, the scaling-law letters the analysis uses.
SIZE_FIELDS = {"N": ("params", "N"), "D": ("tokens", "D")}


def _size(rec: dict, letter: str, where: str) -> float:
  for field in SIZE_FIELDS[letter]:
    if rec.get(field) not in ("", None):
      return _number(rec[field], field, where)
  raise UserError(f"{where}: missing field {SIZE_FIELDS[letter][0]!r} (or {letter!r})")


def normalise(rec: dict, where: str) -> dict:
  N, D = _size(rec, "N", where), _size(rec, "D", where)
  if rec.get("mixture") in ("", None):
    raise UserError(f"{where}: missing field 'mixture'")
  if N <= 0 or D <= 0:
    raise UserError(f"{where}: params and tokens must be positive, got {N:g} and {D:g}")
  domains = {k: _number(v, f"losses.{k}", where) for k, v in (rec.get("losses") or {}).items()}
  if "loss" in rec:
    loss = _number(rec["loss"], "loss", where)
  elif domains:
    loss = _number(rec.get("loss_avg", sum(domains.values()) / len(domains)), "loss", where)
  else:
    raise UserError(f"{where}: missing field 'loss' (or 'losses')")
  kind, share = _kind_and_share(rec, where)
  if not 0.0 <= share <= 1.0:
    raise UserError(f"{where}: synthetic share {share} is outside [0, 1]")
  seed = rec.get("seed", 0)
  seed = 0 if seed in ("", None) else int(_number(seed, "seed", where))
  evals = rec.get("eval") or {}
  docs = {
      d: (e["doc_loss_sums"], e["doc_tokens"])
      for d, e in evals.items()
      if "doc_loss_sums" in e and "doc_tokens" in e
  }
  return {
      "N": N,
      "D": D,
      "mixture": str(rec["mixture"]),
      "kind": kind,
      "share": share,
      "seed": seed,
      "loss": loss,
      "domains": domains,
      "docs": docs,
      "baselines": {d: e["unigram_loss"] for d, e in evals.items() if "unigram_loss" in e},
      "bits_per_byte": {d: e["bits_per_byte"] for d, e in evals.items() if "bits_per_byte" in e},
      "repeats": rec.get("repeats") or {},
      "path": rec.get("path", where),
      "model": rec.get("model", ""),
      "vocabulary": str(rec.get("vocabulary") or ""),
      "seq_len": rec.get("seq_len"),
      "eval_set": _eval_set(evals),
  }


def _eval_set(evals: dict) -> str:
  """What a run was evaluated on, as a fingerprint: its domains and their documents' token
  counts ('' when the record does not say)."""
  if not evals or not all("doc_tokens" in e for e in evals.values()):
    return ""
  text = json.dumps({d: e["doc_tokens"] for d, e in sorted(evals.items())})
  return hashlib.sha256(text.encode()).hexdigest()[:12]


COMPARABLE = {
    "vocabulary": "vocabularies",
    "eval_set": "evaluation sets",
    "seq_len": "sequence lengths",
}


def check_comparable(records: List[dict]) -> None:
  """Losses of different vocabularies or evaluation sets are not comparable, nor are runs of
  different sequence lengths pooled as seeds of one cell: one line naming two records that
  differ (records that do not say, such as CSV rows, are not checked)."""
  for field, what in COMPARABLE.items():
    seen: Dict[object, str] = {}
    for r in records:
      if r.get(field) not in ("", None):
        seen.setdefault(r[field], r["path"])
    if len(seen) > 1:
      (a, pa), (b, pb) = list(seen.items())[:2]
      raise UserError(
          f"runs of different {what} are not comparable: {pa} has {field} {a}, "
          f"{pb} has {b}; report them separately"
      )


def _from_csv(path: str) -> List[dict]:
  out = []
  with io.StringIO(storage.read_text(path), newline="") as f:
    reader = csv.DictReader(f)
    for i, row in enumerate(reader, start=2):
      rec = {k: v for k, v in row.items() if not k.startswith("loss/")}
      rec["losses"] = {
          k[len("loss/") :]: v
          for k, v in row.items()
          if k.startswith("loss/") and v not in ("", None)
      }
      out.append(normalise(rec, f"{path}:{i}"))
  return out


def _from_jsonl(path: str) -> List[dict]:
  out = []
  for i, rec in jsonl.records(path):
    if not isinstance(rec, dict):
      raise UserError(f"{path}:{i}: a run record is a JSON object, got {type(rec).__name__}")
    out.append(normalise(rec, f"{path}:{i}"))
  return out


def _from_run_json(path: str) -> dict:
  rec = storage.read_json(path)
  rec.setdefault("path", path)
  return normalise(rec, path)


def load(paths) -> List[dict]:
  """Records from files and folders (folders are searched for run.json)."""
  if isinstance(paths, str):
    paths = [paths]
  out: List[dict] = []
  for path in paths:
    if not storage.exists(path):
      raise UserError(f"{path}: no such file or folder")
    if storage.isdir(path):  # a local folder or an object-store prefix
      found = storage.glob(storage.join(path, "**", "run.json"))
      out.extend(_from_run_json(p) for p in found)
    elif path.endswith(".csv"):
      out.extend(_from_csv(path))
    elif path.endswith(".json"):
      out.append(_from_run_json(path))
    else:
      out.extend(_from_jsonl(path))
  if not out:
    raise UserError(f"no run records found in {', '.join(paths)}")
  return out


def group(records: List[dict], *keys) -> Dict[tuple, List[dict]]:
  out: Dict[tuple, List[dict]] = {}
  for r in records:
    out.setdefault(tuple(r[k] for k in keys), []).append(r)
  return out
