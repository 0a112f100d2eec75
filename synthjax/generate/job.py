"""The generation job: a corpus in, synthetic shards with provenance out, resumable.

Input documents are cut into chunks (at most `chunk_tokens` generator tokens each) and the
chunk list is cut into shards of `shard_size` chunks, in input order. Shard k belongs to host
k mod H. A shard is written whole under a temporary name and renamed when all its chunks are
done, so a killed job redoes at most the shards in flight: every chunk ends up exactly once,
either in OUT/shard-k.jsonl (kept) or OUT/rejected/shard-k.jsonl (with the filter's reason).

Hosts need no JAX system between them: each runs its own engine on its own devices and takes
every host_count-th shard.

OUT/manifest.json holds the job's settings (a rerun with other settings is refused) and, once
every shard exists, the totals: chunks, kept, rejected per reason, tokens.
"""
import dataclasses
import json
import math
import os
import sys
import time
from typing import List

import gin
import jax

from synthjax import assets, storage
from synthjax.data import sources
from synthjax.errors import UserError, check_field_types
from synthjax.generate import filters, prompts
from synthjax.generate.engine import Engine, Request, Sampling


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  input: str                          # file glob of documents (any format of data.sources)
  style: str                          # hq, qa, easy, hard, textbook, or a template .json
  output_dir: str
  generator: str = assets.EMBEDDED_GENERATOR  # a synthjax model dir, or the embedded name
  text_field: str = "text"
  chunk_tokens: int = 300
  max_new_tokens: int = 384
  temperature: float = 0.3
  top_k: int = 0
  top_p: float = 0.9
  repetition_penalty: float = 1.1
  seed: int = 0
  max_documents: int = 0              # 0: all
  shard_size: int = 32                # chunks per output shard
  slots: int = 16                     # concurrent sequences (performance only)
  max_len: int = 1024                 # KV cache length: prompt + output
  apply_filter: bool = True           # False keeps every output (its reason goes in "flag")
  # Hosts work independently (no collectives): host i of n takes shards i, i+n, ...
  host_index: int = int(os.environ.get("SYNTHJAX_PROCESS_ID", 0))
  host_count: int = int(os.environ.get("SYNTHJAX_NUM_PROCESSES", 1))

  def __post_init__(self):
    check_field_types(self)
    for field in ("chunk_tokens", "max_new_tokens", "shard_size", "slots", "max_len",
                  "host_count"):
      if getattr(self, field) <= 0:
        raise UserError(f"GenerateConfig.{field} must be positive, got {getattr(self, field)}")
    if not 0 <= self.host_index < self.host_count:
      raise UserError(f"GenerateConfig.host_index {self.host_index} is outside "
                      f"0..{self.host_count - 1}")


def resolve_generator(name: str) -> str:
  """A model directory; the embedded name is converted from its GGUF once and cached."""
  if name != assets.EMBEDDED_GENERATOR:
    if not os.path.exists(os.path.join(name, "model.json")):
      raise UserError(f"generator {name!r}: not a synthjax model directory (no model.json); "
                      "convert a checkpoint with python -m synthjax.convert")
    return name
  out = os.path.join(os.path.expanduser("~"), ".cache", "synthjax", "models", name)
  if not os.path.exists(os.path.join(out, "model.json")):
    from synthjax import convert
    convert.convert_gguf(name, out, overwrite=True)
  return out


def _signature(cfg: GenerateConfig, template: dict, generator_dir: str) -> dict:
  sig = {k: v for k, v in dataclasses.asdict(cfg).items()
         if k not in ("output_dir", "slots", "max_len", "host_index", "host_count")}
  sig.update(prompt_version=template["version"], generator_dir=os.path.abspath(generator_dir))
  return sig


def _check_manifest(out_dir: str, sig: dict) -> None:
  path = storage.join(out_dir, "manifest.json")
  if not storage.exists(path):
    storage.write_json(path, {"job": sig})  # every host writes the same content
    return
  old = storage.read_json(path).get("job", {})
  diff = [f"{k}={old.get(k)!r} vs {sig.get(k)!r}" for k in sorted(set(old) | set(sig))
          if old.get(k) != sig.get(k)]
  if diff:
    raise UserError(f"{out_dir} holds another job's manifest ({'; '.join(diff[:3])}); use a new "
                    "output dir")


def plan_chunks(cfg: GenerateConfig, count_tokens) -> List[dict]:
  chunks = []
  for n, doc in enumerate(sources.read_documents(cfg.input, cfg.text_field)):
    if cfg.max_documents and n >= cfg.max_documents:
      break
    for i, piece in enumerate(prompts.chunk(doc["text"], cfg.chunk_tokens, count_tokens)):
      chunks.append({"source_id": str(doc["id"]), "chunk": i, "source_text": piece})
  if not chunks:
    raise UserError(f"{cfg.input}: empty input source (no text to generate from)")
  return chunks


def run(cfg: GenerateConfig) -> dict:
  from synthjax.checkpoints import store
  template = prompts.load_template(cfg.style)
  generator_dir = resolve_generator(cfg.generator)
  model_cfg = store.load_config(generator_dir)
  tokenizer, meta = store.load_tokenizer(generator_dir)
  fmt = prompts.chat_format(meta.get("chat_template", ""))
  count = lambda s: len(tokenizer.encode(s, add_special_tokens=False).ids)
  if storage.isfile(cfg.output_dir):
    raise UserError(f"GenerateConfig.output_dir {cfg.output_dir}: is a file, not a folder")
  chunks = plan_chunks(cfg, count)
  n_shards = (len(chunks) + cfg.shard_size - 1) // cfg.shard_size
  mine = [k for k in range(n_shards) if k % cfg.host_count == cfg.host_index
          and not storage.exists(_shard_path(cfg.output_dir, k))]
  requests = {}
  for k in mine:
    for c in chunks[k * cfg.shard_size:(k + 1) * cfg.shard_size]:
      text = prompts.render(template, c["source_text"], fmt)
      prompt_ids = tokenizer.encode(text, add_special_tokens=False).ids
      if len(prompt_ids) + 1 >= cfg.max_len:
        raise UserError(f"chunk {c['source_id']}#{c['chunk']}: prompt of {len(prompt_ids)} "
                        f"tokens does not fit the context of {cfg.max_len} tokens")
      requests[(k, c["source_id"], c["chunk"])] = prompt_ids
  # Every check is done: only now is anything written.
  storage.check_writable(cfg.output_dir)
  storage.makedirs(storage.join(cfg.output_dir, "rejected"))
  _check_manifest(cfg.output_dir, _signature(cfg, template, generator_dir))
  if mine:
    params = store.load_params(generator_dir, model_cfg)
    engine = Engine(model_cfg, params, eos_ids=[meta.get("eos_id", -1)], slots=cfg.slots,
                    max_len=cfg.max_len, mesh=_mesh(cfg.slots), decode_text=tokenizer.decode)
    _generate_shards(cfg, engine, tokenizer, template, chunks, mine, requests, generator_dir)
  return finalize(cfg.output_dir, n_shards, len(chunks))


def _mesh(slots: int):
  """Slots data-parallel over as many of this host's devices as divide them evenly."""
  from synthjax import sharding
  n = math.gcd(slots, len(jax.local_devices()))
  return sharding.make_mesh({"data": n, "fsdp": 1, "tensor": 1}, jax.local_devices()[:n])


def _shard_path(out_dir: str, k: int, rejected: bool = False) -> str:
  name = f"shard-{k:05d}.jsonl"
  return storage.join(out_dir, "rejected", name) if rejected else storage.join(out_dir, name)


def _generate_shards(cfg, engine, tokenizer, template, chunks, mine, requests, generator_dir):
  """All of this host's chunks go to the engine as one queue (slots refill across shard
  boundaries); a shard is written as soon as its last chunk is back."""
  sampling = Sampling(cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty,
                      cfg.max_new_tokens, cfg.seed)
  order, reqs = [], []
  for k in mine:
    for c in chunks[k * cfg.shard_size:(k + 1) * cfg.shard_size]:
      order.append((k, c))
      reqs.append(Request(requests[(k, c["source_id"], c["chunk"])], dataclasses.replace(
          sampling, seed=hash_seed(cfg.seed, c))))
  pending = {k: len(chunks[k * cfg.shard_size:(k + 1) * cfg.shard_size]) for k in mine}
  kept = {k: [] for k in mine}
  rejected = {k: [] for k in mine}
  progress = {"chunks": 0, "tokens": 0, "t0": time.time()}

  def on_result(i, res):
    k, c = order[i]
    ids = [t for t in res.tokens if t not in engine.eos_ids]
    text = tokenizer.decode(ids).strip()
    if template.get("keep_prefill"):
      text = f"{template['prefill']} {text}"
    reason = filters.rejection(text, c["source_text"], res.finish)
    rec = {"id": f"{c['source_id']}#{c['chunk']}", "source_id": c["source_id"],
           "chunk": c["chunk"], "text": text, "style": template["style"],
           "prompt_version": template["version"], "generator": os.path.basename(
               os.path.normpath(generator_dir)), "sampling": dataclasses.asdict(reqs[i].sampling),
           "prompt_tokens": len(reqs[i].prompt), "output_tokens": len(res.tokens),
           "finish": res.finish}
    if reason and cfg.apply_filter:
      rec["rejected"] = reason
      rejected[k].append(rec)
    else:
      if reason:
        rec["flag"] = reason
      kept[k].append(rec)
    progress["chunks"] += 1
    progress["tokens"] += len(res.tokens)
    pending[k] -= 1
    if pending[k] == 0:
      by_position = lambda r: (r["source_id"], r["chunk"])
      # rejected first: the kept shard's appearance is what marks shard k as done
      _write_jsonl(_shard_path(cfg.output_dir, k, rejected=True),
                   sorted(rejected.pop(k), key=by_position))
      _write_jsonl(_shard_path(cfg.output_dir, k), sorted(kept.pop(k), key=by_position))
      elapsed = time.time() - progress["t0"]
      left = len(order) - progress["chunks"]
      eta = elapsed / progress["chunks"] * left
      print(f"generate: chunks {progress['chunks']}/{len(order)} | "
            f"{progress['tokens'] / elapsed:.1f} tok/s | ETA {int(eta // 60)}m{int(eta % 60):02d}s",
            file=sys.stderr, flush=True)

  engine.generate(reqs, on_result=on_result)


def hash_seed(seed: int, chunk: dict) -> int:
  """A per-chunk seed from the job seed and the chunk's identity (stable across runs)."""
  import hashlib
  h = hashlib.sha256(f"{seed}:{chunk['source_id']}:{chunk['chunk']}".encode()).digest()
  return int.from_bytes(h[:4], "little")


def _write_jsonl(path: str, records: List[dict]) -> None:
  storage.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def finalize(out_dir: str, n_shards: int, n_chunks: int) -> dict:
  """Totals into the manifest once every shard exists (any host may be the last one)."""
  path = storage.join(out_dir, "manifest.json")
  manifest = storage.read_json(path)
  if not all(storage.exists(_shard_path(out_dir, k)) for k in range(n_shards)):
    return manifest
  kept, reasons, tokens = 0, {}, 0
  for k in range(n_shards):
    for rejected in (False, True):
      for line in storage.read_text(_shard_path(out_dir, k, rejected)).splitlines():
        if line.strip():
          rec = json.loads(line)
          tokens += rec["output_tokens"]
          if rejected:
            reasons[rec["rejected"]] = reasons.get(rec["rejected"], 0) + 1
          else:
            kept += 1
  manifest.update(chunks=n_chunks, shards=n_shards, kept=kept, rejected=reasons,
                  output_tokens=tokens, complete=True)
  storage.write_json(path, manifest)
  return manifest


def kept_files(out_dir: str) -> str:
  """The glob the data layer reads as this job's synthetic text."""
  return storage.join(out_dir, "shard-*.jsonl")


def all_records(out_dir: str) -> List[dict]:
  out = []
  for pattern in ("shard-*.jsonl", "rejected/shard-*.jsonl"):
    for path in storage.glob(storage.join(out_dir, pattern)):
      out.extend(json.loads(l) for l in storage.read_text(path).splitlines() if l.strip())
  return out
