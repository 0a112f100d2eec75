"""Tokenize registered seqio Tasks into their shared tokenized copies (token_cache.py), on
Apache Beam: each of a task's source shards (its files, or a TFDS dataset's files) goes through
the task's own preprocessors on some worker and becomes one shard of tokens with its
document lengths; a final step per task writes the manifest that commits the copy.

    python -m synthjax.data.tokenize --task=natural,valid_web --gin_file=my_tasks.gin \
        --cache_dir=gs://BUCKET/study/tokens -- --runner=DirectRunner \
        --direct_num_workers=2 --direct_running_mode=multi_processing

The gin file registers the tasks (`register_tasks.register = @register_study_data` and
its bindings), or --module_import=MODULE does. Other arguments are Beam pipeline options: --runner=DataflowRunner --project=P
--region=R --temp_location=gs://BUCKET/tmp runs the same pipeline on Dataflow (README).
A copy that exists already is kept; tokens are uint16 when the vocabulary has at most 65,536
pieces.

Workers rebuild the tasks they tokenize from each task's registration (source, vocabulary
path, text field: `register_task` records it), or by importing --module_import modules.
"""

import importlib
import os
import sys
import tempfile
import time
import uuid
from typing import List, Optional, Sequence

import gin
import numpy as np

from synthjax import storage
from synthjax.data import token_cache
from synthjax.errors import UserError


def _plan(task_name: str) -> Optional[dict]:
  """What a worker needs to tokenize one task's shards, or None when a copy is committed."""
  task = token_cache.get_task(task_name)
  out = token_cache.task_dir(task_name)
  if storage.exists(storage.join(out, token_cache.MANIFEST)):
    token_cache.read_manifest(task_name)  # a copy of another vocabulary is refused, not reused
    return None
  spec = getattr(task, "synthjax_spec", None)
  shards = list(task.source.list_shards("train"))
  vocab = token_cache.vocabulary_info(task)
  return {
      "task": task_name,
      "spec": spec,
      "out": out,
      "shards": len(shards),
      "attempt": f"attempt-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}",
      "vocabulary": vocab,
      "dtype": np.dtype(token_cache.token_dtype(vocab["size"])).name,
      "fingerprint": os.path.basename(out).rsplit("-", 1)[1],
  }


def _ensure_registered(plan: dict, modules: Sequence[str]):
  """The task in this (possibly fresh) worker process."""
  import seqio

  for m in modules:
    importlib.import_module(m)
  if plan["task"] not in seqio.TaskRegistry.names() and plan["spec"]:
    from synthjax.data import tasks
    from synthjax.data.vocab import load_vocabulary

    spec = plan["spec"]
    tasks.register_task(
        plan["task"], spec["source"], load_vocabulary(spec["vocabulary"]), spec["text_field"]
    )
  return token_cache.get_task(plan["task"])


def write_shard(examples, path_tokens: str, path_lengths: str, dtype) -> dict:
  """Documents (token arrays) -> one shard: their tokens end to end, and their lengths; empty
  documents (EOS only) are dropped."""
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, "tokens.bin")
    counts: List[int] = []
    with open(local, "wb") as f:
      for tokens in examples:
        if len(tokens) <= 1:
          continue
        f.write(np.asarray(tokens).astype(dtype).tobytes())
        counts.append(len(tokens))
    lengths = np.asarray(counts, np.int32)
    local_lengths = os.path.join(tmp, "lengths.npy")
    np.save(local_lengths, lengths)
    storage.upload(local, path_tokens)
    storage.upload(local_lengths, path_lengths)
  return {"documents": int(len(lengths)), "tokens": int(lengths.sum(dtype=np.int64))}


def _examples(task, shard_info=None):
  ds = task.get_dataset(
      sequence_length=None,
      split="train",
      shuffle=False,
      use_cached=False,
      num_epochs=1,
      shard_info=shard_info,
  )
  return (ex["targets"] for ex in ds.as_numpy_iterator())


def _tokenize_shard(plan: dict, index: int, modules: Sequence[str]) -> dict:
  import seqio

  task = _ensure_registered(plan, modules)
  names = token_cache.shard_names(index, plan["shards"])
  folder = storage.join(plan["out"], plan["attempt"])
  stats = write_shard(
      _examples(task, seqio.ShardInfo(index, plan["shards"])),
      storage.join(folder, names["tokens_file"]),
      storage.join(folder, names["lengths_file"]),
      np.dtype(plan["dtype"]),
  )
  return {"index": index, **names, **stats}


def _commit(plan: dict, shards: List[dict]) -> dict:
  """The manifest, written whole once every shard is in place: the copy's commit."""
  shards = sorted(shards, key=lambda s: s["index"])
  if [s["index"] for s in shards] != list(range(plan["shards"])):
    raise RuntimeError(f"task {plan['task']}: shards missing at commit")
  documents = sum(s["documents"] for s in shards)
  tokens = sum(s["tokens"] for s in shards)
  manifest = {
      "task": plan["task"],
      "fingerprint": plan["fingerprint"],
      "attempt": plan["attempt"],
      "format": token_cache.FORMAT,
      "dtype": plan["dtype"],
      "vocabulary": plan["vocabulary"],
      "shards": shards,
      "documents": documents,
      "tokens": tokens,
      "mean_tokens": tokens / max(documents, 1),
  }
  storage.write_json(storage.join(plan["out"], token_cache.MANIFEST), manifest)
  return manifest


def tokenize(
    task_names: Sequence[str], beam_args: Sequence[str] = (), modules: Sequence[str] = ()
) -> List[str]:
  """Tokenize the tasks that have no committed copy in one Beam pipeline; returns the copies'
  folders. beam_args: Beam pipeline options (default: DirectRunner, one in-process worker)."""
  from synthjax import quiet

  quiet.import_beam()
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions

  storage.check_writable(token_cache.cache_dir())
  plans = [p for p in (_plan(n) for n in dict.fromkeys(task_names)) if p]
  if plans:
    t = time.time()
    options = PipelineOptions(list(beam_args) or ["--runner=DirectRunner"])
    units = [(i, s) for i, p in enumerate(plans) for s in range(p["shards"])]
    try:
      with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "Shards" >> beam.Create(units)
            | "Spread" >> beam.Reshuffle()
            | "Tokenize" >> beam.Map(lambda u: (u[0], _tokenize_shard(plans[u[0]], u[1], modules)))
            | "ByTask" >> beam.GroupByKey()
            | "Commit" >> beam.MapTuple(lambda i, shards: _commit(plans[i], list(shards)))
        )
    except UserError:
      raise
    except Exception as e:  # a worker's error comes back wrapped in the runner's own
      raise _worker_error(e) from None
    for p in plans:
      stats = token_cache.stats(p["task"])
      print(
          f"tokenize: {p['task']}: {stats['documents']:,} documents, {stats['tokens']:,} "
          f"tokens in {p['shards']} shards -> {p['out']}",
          file=sys.stderr,
          flush=True,
      )
    print(f"tokenize: {len(plans)} tasks in {time.time() - t:.1f}s", file=sys.stderr, flush=True)
  return [token_cache.task_dir(n) for n in task_names]


def _worker_error(e: Exception) -> Exception:
  """A UserError raised on a worker, as itself; anything else as is."""
  for line in str(e).splitlines():
    if "UserError: " in line:
      return UserError(line.split("UserError: ", 1)[1].strip().strip("'\""))
  return e


def tokenize_serially(task_name: str) -> str:
  """The same copy made in one Python loop in this process (one shard): the reference the
  Beam pipeline is tested and benchmarked against."""
  plan = _plan(task_name)
  if plan:
    plan["shards"] = 1
    task = token_cache.get_task(task_name)
    names = token_cache.shard_names(0, 1)
    folder = storage.join(plan["out"], plan["attempt"])
    stats = write_shard(
        _examples(task),
        storage.join(folder, names["tokens_file"]),
        storage.join(folder, names["lengths_file"]),
        np.dtype(plan["dtype"]),
    )
    _commit(plan, [{"index": 0, **names, **stats}])
  return token_cache.task_dir(task_name)


def _parse(rest: List[str]):
  """(task names, cache dir, modules, Beam options) from the arguments gin left."""
  names: List[str] = []
  modules: List[str] = []
  beam_args: List[str] = []
  cache = None
  for i, arg in enumerate(rest):
    if arg == "--":
      beam_args.extend(rest[i + 1 :])
      break
    name, _, value = arg.partition("=")
    if name == "--task":
      names.extend(n for n in value.split(",") if n)
    elif name == "--cache_dir":
      cache = value
    elif name == "--module_import":
      modules.append(value)
    else:
      beam_args.append(arg)
  return names, cache, modules, beam_args


def _run(rest: List[str]):
  from synthjax import gin_cli

  names, cache, modules, beam_args = _parse(rest)
  if not names:
    raise UserError("--task=NAME is required (one or more registered tasks, comma-separated)")
  if cache:
    gin.bind_parameter("cache_dir.path", cache)
  for m in modules:
    try:
      importlib.import_module(m)
    except ImportError as e:
      raise UserError(f"--module_import={m}: cannot import ({e})") from None
  from synthjax.data import tasks

  gin_cli.call_configured(tasks.register_tasks)
  for folder in tokenize(names, beam_args, modules):
    print(folder)


def main(argv=None):
  from synthjax import gin_cli

  gin_cli.main("synthjax.data.tokenize", _run, argv)


if __name__ == "__main__":
  main()
