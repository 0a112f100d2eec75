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
import math
import os
import sys
import time
from typing import Iterator, List, Tuple

import jax

from synthjax import storage
from synthjax.data import sources
from synthjax.errors import UserError
from synthjax.generate import filters, output, prompts
from synthjax.generate.config import GenerateConfig, resolve_generator
from synthjax.generate.engine import Engine, batching
from synthjax.generate.sampling import Sampling
from synthjax.generate.slots import Request
from synthjax.lease import Lease
from synthjax.models import quantize

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


_LOADED: dict = {}  # the last generator's weights, for the next job in this process


def loaded_generator(generator_dir: str, model_cfg, weights: str):
  """The generator's (config, weights), loaded once for every job a long-lived process runs
  (a Ray generation actor serves many parts); one generator is held at a time."""
  from synthjax.checkpoints import store

  key = (generator_dir, tuple(storage.stamp(storage.join(generator_dir, "model.json"))), weights)
  if key not in _LOADED:
    _LOADED.clear()  # the previous generator's weights go before the next one's load
    params = store.load_params(generator_dir, model_cfg)
    if weights:
      model_cfg, params = quantize.convert(model_cfg, params, weights)
    _LOADED[key] = (model_cfg, params)
  return _LOADED[key]


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
      if not storage.exists(output.shard_path(cfg.output_dir, name)):
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
    output.check_manifest(cfg.output_dir, _signature(cfg, template, generator_dir))
    if first is not None:
      model_cfg, params = loaded_generator(generator_dir, model_cfg, cfg.weights)
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
        output.host_path(cfg.output_dir, cfg.host_count, cfg.host_index), {"shards": owned}
    )
  return output.finalize(cfg.output_dir, cfg.host_count)


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
    output.write_jsonl(
        output.shard_path(cfg.output_dir, name, rejected=True), in_order(rejected.pop(name))
    )
    output.write_jsonl(output.shard_path(cfg.output_dir, name), in_order(kept.pop(name)))
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
