"""The generation job: a corpus in, synthetic shards with provenance out, resumable, split
over hosts that each stream only their own part.

The input (any source the data layer reads: file globs, local or on an object store, and
'tfds:NAME') is a list of parts (sources.parts: a glob's files, or 1% slices of a TFDS split),
each cut into shards of `shard_size` documents in order. Shard (p, b) is OUT/shard-p-b.jsonl.
With at least as many parts as hosts, host i reads only the parts p = i mod H; with fewer (or
with max_documents, which counts documents in order), every host streams the input and takes
the shards b = i mod H in order. Either way no host holds the corpus or its chunk list: it
reads a few shards, generates them, writes them, and reads on.

Each document is cut into chunks of at most `chunk_tokens` generator tokens. A shard is written
whole when its last chunk is back (rejected chunks first, under rejected/), so a killed job
redoes at most the shards in flight and every chunk ends up exactly once. Shard names do not
depend on the host count, so a job resumed on other hosts skips what is done.

OUT/manifest.json holds the job's settings (a rerun with other settings is refused); each host
writes OUT/hosts/H-i.json when its part is done, and whichever host finds all H of them
writes the totals (chunks, kept, rejected per reason, tokens) into the manifest.
"""

import dataclasses
import itertools
import json
import math
import os
import sys
import time
from typing import Dict, Iterator, List, Tuple

import gin
import jax

from synthjax import assets, storage
from synthjax.data import sources
from synthjax.errors import UserError, check_field_types
from synthjax.generate import filters, prompts
from synthjax.generate.engine import Engine, Request, Sampling, batching
from synthjax.lease import Lease
from synthjax.models import quantize

KV_CACHE_DTYPES = ("float32", "bfloat16")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  input: str  # file glob of documents (any format of data.sources)
  style: str  # hq, qa, easy, hard, textbook, or a template .json
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
  max_documents: int = 0  # 0: all
  shard_size: int = 8  # documents per output shard
  slots: int = 16  # concurrent sequences
  # '' (as stored), 'float32', 'bfloat16' or 'int8' (layer weights int8 with per-channel scales,
  # the rest and the compute bf16).
  weights: str = ""
  # The KV cache's dtype: '' (the compute dtype), 'float32' or 'bfloat16'. A bf16 cache halves
  # its memory; on a CPU, bf16 weights over an f32 cache ran fastest (README).
  kv_cache: str = ""
  # Devices each copy of the generator is split over (heads, mlp and vocab over "tensor"), for
  # generators that do not fit one device; the host's other devices share out the slots.
  tensor_parallel: int = 1
  # Requests draft this many tokens by prompt lookup and check them in one pass (engine.py):
  # greedy output is plain greedy decoding's; sampled output has plain sampling's distribution
  # but other tokens. 0: off.
  draft_tokens: int = 0
  # Decode steps per call to the device (the host waits once per call). 0:
  # engine.default_decode_steps() (1 on a CPU, 8 on an accelerator).
  decode_steps: int = 0
  # Prompts prefilled together in one call. 0: engine.default_prefill_batch() (1 on a CPU, 8
  # on an accelerator). Like slots, a change can round a few outputs differently (_signature).
  prefill_batch: int = 0
  # The template's text before the chunk (system turn and instructions) is prefilled once and
  # every prompt from its end (engine.py: shared_prefix). Same output up to rounding.
  prefix_cache: bool = True
  max_len: int = 1024  # KV cache length: prompt + output
  apply_filter: bool = True  # False keeps every output (its reason goes in "flag")
  # Hosts work independently (no collectives): host i of n takes shards i, i+n, ...
  host_index: int = int(os.environ.get("SYNTHJAX_PROCESS_ID", 0))
  host_count: int = int(os.environ.get("SYNTHJAX_NUM_PROCESSES", 1))

  def __post_init__(self):
    check_field_types(self)
    for field in (
        "chunk_tokens",
        "max_new_tokens",
        "shard_size",
        "slots",
        "max_len",
        "host_count",
        "tensor_parallel",
    ):
      if getattr(self, field) <= 0:
        raise UserError(f"GenerateConfig.{field} must be positive, got {getattr(self, field)}")
    for field in ("draft_tokens", "decode_steps", "prefill_batch", "max_documents", "top_k"):
      # 0: off, automatic or all
      if getattr(self, field) < 0:
        raise UserError(f"GenerateConfig.{field} must be 0 or more, got {getattr(self, field)}")
    if not 0 <= self.temperature < math.inf:  # below 0 would favour the least likely tokens
      raise UserError(
          f"GenerateConfig.temperature must be 0 (greedy) or more, got {self.temperature}"
      )
    if not 0 < self.top_p <= 1:
      raise UserError(f"GenerateConfig.top_p must be in (0, 1], got {self.top_p}")
    if not 0 < self.repetition_penalty < math.inf:
      raise UserError(
          f"GenerateConfig.repetition_penalty must be positive (1: none), got "
          f"{self.repetition_penalty}"
      )
    if self.weights not in ("", *quantize.PRECISIONS):
      raise UserError(
          f"GenerateConfig.weights must be '' or one of {quantize.PRECISIONS}, "
          f"got {self.weights!r}"
      )
    if self.kv_cache not in ("", *KV_CACHE_DTYPES):
      raise UserError(
          f"GenerateConfig.kv_cache must be '', 'float32' or 'bfloat16', got {self.kv_cache!r}"
      )
    if not 0 <= self.host_index < self.host_count:
      raise UserError(
          f"GenerateConfig.host_index {self.host_index} is outside 0..{self.host_count - 1}"
      )


def resolve_generator(name: str) -> str:
  """A model directory; the embedded name is converted from its GGUF once and cached."""
  if name != assets.EMBEDDED_GENERATOR:
    if storage.is_remote(name) and storage.exists(storage.join(name, "model.json")):
      return storage.local_folder(name)  # every host reads its own copy
    if not os.path.exists(os.path.join(name, "model.json")):
      raise UserError(
          f"generator {name!r}: not a synthjax model directory (no model.json); "
          "convert a checkpoint with python -m synthjax.convert"
      )
    return name
  out = os.path.join(os.path.expanduser("~"), ".cache", "synthjax", "models", name)
  if not os.path.exists(os.path.join(out, "model.json")):
    from synthjax import convert

    try:
      convert.convert_gguf(name, out)
    except (UserError, OSError):  # another process on this machine converted it first
      if not os.path.exists(os.path.join(out, "model.json")):
        raise
  return out


# Raised when _signature gains a field: a study keys its generation folders by it, so an older
# job's folder (whose manifest cannot say what the new field was) is never resumed as this one.
SIGNATURE_VERSION = 4  # 3: kv_cache, 4: prefix_cache


def _signature(cfg: GenerateConfig, template: dict, generator_dir: str) -> dict:
  """What the outputs depend on. The batch's shape is part of it: XLA rounds a row's products
  differently at another batch size (SmolLM2 in f32: logits moved by up to 3.6e-5 from 32 to 64
  slots, and 1 of 384 HQ outputs changed a word), so the slots, the prompts prefilled per call,
  the decode steps per call (the resolved defaults), the draft length and the tensor split are
  in it, and so are max_len (a request that fills the cache ends there) and prefix_cache (a
  prompt prefilled from the template's end rounds differently). Not in it: the hardware
  (another device kind or count rounds differently too)."""
  sig = {
      k: v
      for k, v in dataclasses.asdict(cfg).items()
      if k not in ("output_dir", "host_index", "host_count")
  }
  sig["decode_steps"], sig["prefill_batch"] = batching(
      cfg.slots, cfg.decode_steps, cfg.prefill_batch
  )
  sig.update(prompt_version=template["version"], generator_dir=os.path.abspath(generator_dir))
  return sig


def _check_manifest(out_dir: str, sig: dict) -> None:
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


def _my_shards(cfg: GenerateConfig) -> Iterator[Tuple[str, List[dict]]]:
  """(shard name, its documents) for this host's shards, in input order, streamed."""
  parts = sources.parts(cfg.input)
  by_part = len(parts) >= cfg.host_count and not cfg.max_documents
  n, block = 0, 0
  for p, part in enumerate(parts):
    if by_part and p % cfg.host_count != cfg.host_index:
      continue
    docs = sources.part_documents(part, cfg.text_field)
    for b in itertools.count():
      shard = list(itertools.islice(docs, cfg.shard_size))
      if cfg.max_documents:
        shard = shard[: max(0, cfg.max_documents - n)]
      if not shard:
        break
      n += len(shard)
      mine = by_part or block % cfg.host_count == cfg.host_index
      block += 1
      if mine:
        yield f"{p:05d}-{b:05d}", shard
    if cfg.max_documents and n >= cfg.max_documents:
      break


def _chunks(cfg: GenerateConfig, docs: List[dict], count_tokens) -> List[dict]:
  return [
      {"source_id": str(doc["id"]), "chunk": i, "source_text": piece}
      for doc in docs
      for i, piece in enumerate(prompts.chunk(doc["text"], cfg.chunk_tokens, count_tokens))
  ]


def run(cfg: GenerateConfig) -> dict:
  from synthjax.checkpoints import store

  template = prompts.load_template(cfg.style)
  generator_dir = resolve_generator(cfg.generator)
  model_cfg = store.load_config(generator_dir)
  store.check_params(generator_dir, model_cfg)  # before anything is written
  tokenizer, meta = store.load_tokenizer(generator_dir)
  fmt = prompts.chat_format(meta.get("chat_template", ""))
  count = lambda s: len(tokenizer.encode(s, add_special_tokens=False).ids)
  if storage.isfile(cfg.output_dir):
    raise UserError(f"GenerateConfig.output_dir {cfg.output_dir}: is a file, not a folder")

  def prompt_ids(c):
    ids = tokenizer.encode(
        prompts.render(template, c["source_text"], fmt), add_special_tokens=False
    ).ids
    if len(ids) + 1 >= cfg.max_len:
      raise UserError(
          f"chunk {c['source_id']}#{c['chunk']}: prompt of {len(ids)} tokens does "
          f"not fit the context of {cfg.max_len} tokens"
      )
    return ids

  def unfinished():
    """This host's shards not yet written, streamed: (name, its chunks, their prompts)."""
    for name, docs in _my_shards(cfg):
      owned.append(name)
      if not storage.exists(_shard_path(cfg.output_dir, name)):
        chunks = _chunks(cfg, docs, count)
        yield name, chunks, [prompt_ids(c) for c in chunks]

  owned: List[str] = []  # this host's shards, done before or now
  todo = unfinished()
  first = next(todo, None)  # its prompts are checked before anything is written
  storage.check_writable(cfg.output_dir)
  storage.makedirs(storage.join(cfg.output_dir, "rejected"))
  # One writer per part: two jobs on one part would write its shards twice.
  with Lease(
      cfg.output_dir,
      f"generation part {cfg.host_index} of {cfg.host_count}",
      name=f"lease-{cfg.host_count}-{cfg.host_index}.json",
  ):
    _check_manifest(cfg.output_dir, _signature(cfg, template, generator_dir))
    if first is not None:
      params = store.load_params(generator_dir, model_cfg)
      if cfg.weights:
        model_cfg, params = quantize.convert(model_cfg, params, cfg.weights)
      engine = Engine(
          model_cfg,
          params,
          eos_ids=[meta.get("eos_id", -1)],
          slots=cfg.slots,
          max_len=cfg.max_len,
          mesh=_mesh(cfg.slots, cfg.tensor_parallel),
          decode_text=tokenizer.decode,
          draft_tokens=cfg.draft_tokens,
          decode_steps=cfg.decode_steps,
          prefill_batch=cfg.prefill_batch,
          cache_dtype=cfg.kv_cache or None,
          shared_prefix=_template_head(template, fmt, tokenizer) if cfg.prefix_cache else (),
      )
      try:
        _generate_shards(
            cfg, engine, tokenizer, template, itertools.chain([first], todo), generator_dir
        )
      except UserError as e:  # bad input found mid-way: the input is streamed, not pre-read
        done = len(storage.glob(storage.join(cfg.output_dir, "shard-*.jsonl")))
        if not done:
          raise
        raise UserError(
            f"{e} ({done} shards written before it are kept: once the input is "
            "fixed, a rerun resumes from them)"
        ) from None
    storage.write_json(
        _host_path(cfg.output_dir, cfg.host_count, cfg.host_index), {"shards": owned}
    )
  return finalize(cfg.output_dir, cfg.host_count)


def _template_head(template: dict, fmt: str, tokenizer) -> List[int]:
  """The token ids every prompt of this template starts with: its text before the chunk, less
  the last token, which a merge with the chunk's first characters could change (the engine
  checks each prompt and prefills one that differs whole)."""
  head = prompts.render(template, "{text}", fmt).split("{text}")[0]
  return tokenizer.encode(head, add_special_tokens=False).ids[:-1]


def _mesh(slots: int, tensor_parallel: int = 1):
  """Each copy of the generator over `tensor_parallel` devices; slots data-parallel over as
  many copies as this host's devices hold and the slots divide evenly."""
  from synthjax import sharding

  devices = jax.local_devices()
  if tensor_parallel > len(devices):
    raise UserError(
        f"GenerateConfig.tensor_parallel={tensor_parallel}: this host has only "
        f"{len(devices)} devices"
    )
  n = math.gcd(slots, len(devices) // tensor_parallel)
  return sharding.make_mesh(
      {"data": n, "fsdp": 1, "tensor": tensor_parallel}, devices[: n * tensor_parallel]
  )


def _shard_path(out_dir: str, name: str, rejected: bool = False) -> str:
  base = f"shard-{name}.jsonl"
  return storage.join(out_dir, "rejected", base) if rejected else storage.join(out_dir, base)


def _host_path(out_dir: str, hosts: int, index: int) -> str:
  return storage.join(out_dir, "hosts", f"{hosts}-{index}.json")


def _generate_shards(cfg, engine, tokenizer, template, shards, generator_dir):
  """Every chunk of the streamed shards goes to the engine as one queue, read as slots free
  up (slots refill across shard boundaries); a shard is written as soon as its last chunk is
  back, and forgotten."""
  sampling = Sampling(
      cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty, cfg.max_new_tokens, cfg.seed
  )
  order = {}  # request index -> (shard, chunk, its sampling), while in flight
  pending, kept, rejected = {}, {}, {}
  stats = {"chunks": 0, "tokens": 0, "t0": time.time()}

  def write(name):
    in_order = lambda pairs: [rec for _, rec in sorted(pairs, key=lambda p: p[0])]
    # rejected first: the kept shard's appearance is what marks the shard as done
    _write_jsonl(_shard_path(cfg.output_dir, name, rejected=True), in_order(rejected.pop(name)))
    _write_jsonl(_shard_path(cfg.output_dir, name), in_order(kept.pop(name)))
    del pending[name]

  def requests():
    i = 0
    for name, chunks, prompt_ids in shards:
      pending[name], kept[name], rejected[name] = len(chunks), [], []
      if not chunks:  # a shard of empty documents is done at once
        write(name)
      for c, ids in zip(chunks, prompt_ids):
        s = dataclasses.replace(sampling, seed=hash_seed(cfg.seed, c))
        order[i] = (name, c, s, len(ids))
        yield Request(ids, s)
        i += 1

  def on_result(i, res):
    k, c, s, prompt_tokens = order.pop(i)
    ids = [t for t in res.tokens if t not in engine.eos_ids]
    raw = tokenizer.decode(ids).strip()
    if template.get("keep_prefill"):
      raw = f"{template['prefill']} {raw}"
    text, reason = filters.review(
        raw,
        c["source_text"],
        res.finish,
        template.get("min_faithfulness", 0.0),
        template.get("must_match"),
    )
    rec = {
        "id": f"{c['source_id']}#{c['chunk']}",
        "source_id": c["source_id"],
        "chunk": c["chunk"],
        "text": text,
        "faithfulness": round(filters.faithfulness(text, c["source_text"]), 4),
        "style": template["style"],
        "prompt_version": template["version"],
        "generator": os.path.basename(os.path.normpath(generator_dir)),
        "sampling": dataclasses.asdict(s),
        "prompt_tokens": prompt_tokens,
        "output_tokens": len(res.tokens),
        "finish": res.finish,
    }
    if text != raw:  # commentary cut off its ends: the whole output stays on record
      rec["raw"] = raw
    if reason and cfg.apply_filter:
      rec["rejected"] = reason
      rejected[k].append((i, rec))
    else:
      if reason:
        rec["flag"] = reason
      kept[k].append((i, rec))
    stats["chunks"] += 1
    stats["tokens"] += len(res.tokens)
    pending[k] -= 1
    if pending[k] == 0:
      write(k)
      elapsed = time.time() - stats["t0"]
      print(
          f"generate: shard {k} | {stats['chunks']} chunks, "
          f"{stats['tokens'] / elapsed:.1f} tok/s, {stats['chunks'] / elapsed:.2f} chunks/s",
          file=sys.stderr,
          flush=True,
      )

  engine.generate(requests(), on_result=on_result)
  if engine.shared_prefix:
    print(
        f"generate: {engine.stats['from_prefix']} of {stats['chunks']} prompts prefilled from "
        f"the end of the template's {len(engine.shared_prefix)}-token head",
        file=sys.stderr,
        flush=True,
    )


def hash_seed(seed: int, chunk: dict) -> int:
  """A per-chunk seed from the job seed and the chunk's identity (stable across runs)."""
  import hashlib

  h = hashlib.sha256(f"{seed}:{chunk['source_id']}:{chunk['chunk']}".encode()).digest()
  return int.from_bytes(h[:4], "little")


def _write_jsonl(path: str, records: List[dict]) -> None:
  storage.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def finalize(out_dir: str, hosts: int) -> dict:
  """Totals into the manifest once every host's part is done (any host may be the last)."""
  path = storage.join(out_dir, "manifest.json")
  manifest = storage.read_json(path)
  host_files = [_host_path(out_dir, hosts, i) for i in range(hosts)]
  if not all(storage.exists(p) for p in host_files):
    return manifest
  names = sorted(n for p in host_files for n in storage.read_json(p)["shards"])
  chunks, kept, tokens, prompt_tokens = 0, 0, 0, 0
  reasons: Dict[str, int] = {}
  for name in names:
    for rejected in (False, True):
      for line in storage.read_text(_shard_path(out_dir, name, rejected)).splitlines():
        if line.strip():
          rec = json.loads(line)
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
      out.extend(json.loads(l) for l in storage.read_text(path).splitlines() if l.strip())
  return out
