"""Tokenized copies of seqio Tasks: one copy per task and content, shared by every job and host
of a study, local or on an object store. `synthjax.data.tokenize` (Apache Beam) makes them;
jobs only read them, and a missing one is an error naming the command that makes it.

    CACHE/<task>-<fingerprint>/manifest.json        written last: commits the copy
    CACHE/<task>-<fingerprint>/<attempt>/tokens-00003-of-00008.array_record
                                                    one record per document: token ids
    CACHE/<task>-<fingerprint>/<attempt>/lengths-00003-of-00008.npy
                                                    tokens per document of that shard

The fingerprint covers the task's name, source (file names, sizes and the store's checksums or
modification stamps: no input byte is read) and the vocabulary's bytes. Every tokenization
writes into a fresh attempt folder and nothing here is ever deleted, so a job reading a copy is
never disturbed by another job making one; the manifest names the attempt it commits.
"""

import hashlib
import json
import os
from typing import Dict, List, Optional

import gin
import numpy as np

from synthjax import quiet

quiet.import_tensorflow()  # seqio loads it: its start-up lines stay out of a binary's output
import seqio

from synthjax import storage
from synthjax.errors import UserError

MANIFEST = "manifest.json"


@gin.configurable
def cache_dir(path: Optional[str] = None) -> str:
  return (
      path
      or os.environ.get("SYNTHJAX_CACHE")
      or os.path.join(os.path.expanduser("~"), ".cache", "synthjax", "tokens")
  )


def get_task(name: str) -> seqio.Task:
  if name not in seqio.TaskRegistry.names():
    raise UserError(
        f"unknown task {name!r} (registered: "
        f"{', '.join(sorted(seqio.TaskRegistry.names())) or 'none'})"
    )
  return seqio.get_mixture_or_task(name)


def vocabulary_info(task: seqio.Task) -> dict:
  """The vocabulary's size and a hash of its file (or its description, without one)."""
  vocab = task.output_features["targets"].vocabulary
  path = getattr(vocab, "synthjax_path", None)
  data = storage.read_bytes(path) if path else repr(vocab).encode()
  return {
      "size": int(vocab.vocab_size),
      "sha256": hashlib.sha256(data).hexdigest()[:16],
      "path": path,
  }


def token_dtype(vocab_size: int):
  return np.uint16 if vocab_size <= 65536 else np.uint32


def fingerprint(task: seqio.Task) -> str:
  h = hashlib.sha256(task.name.encode())
  h.update(vocabulary_info(task)["sha256"].encode())
  pattern = getattr(task.source, "synthjax_pattern", None)
  if pattern:
    from synthjax.data import sources

    h.update(json.dumps([storage.stamp(p) + [p] for p in sources.expand(pattern)]).encode())
  else:  # e.g. a TFDS dataset: its name and version say what it holds
    h.update(repr(task.source).encode())
  h.update(
      repr(
          [
              getattr(p, "__name__", getattr(getattr(p, "func", None), "__name__", p))
              for p in task.preprocessors
          ]
      ).encode()
  )
  return h.hexdigest()[:16]


def task_dir(task_name: str) -> str:
  return storage.join(cache_dir(), f"{task_name}-{fingerprint(get_task(task_name))}")


def make_command(task_name: str) -> str:
  return (
      f"python -m synthjax.data.tokenize --task={task_name} "
      f"--cache_dir={cache_dir()} [--gin_file=... that registers it]"
  )


def read_manifest(task_name: str) -> dict:
  """The committed copy's manifest; one clear line when there is none, it is half-written or
  it was made with another vocabulary."""
  task = get_task(task_name)
  folder = task_dir(task_name)
  path = storage.join(folder, MANIFEST)
  if not storage.exists(path):
    if storage.listdir(folder):
      raise UserError(
          f"{folder}: tokenized copy of task {task_name!r} is incomplete (no "
          f"{MANIFEST}: its tokenization is running or died); make it with "
          f"`{make_command(task_name)}`"
      )
    raise UserError(
        f"task {task_name!r} has no tokenized copy in {cache_dir()}; make it with "
        f"`{make_command(task_name)}`"
    )
  manifest = storage.read_json(path)
  vocab = vocabulary_info(task)
  made_with = manifest.get("vocabulary", {})
  if (made_with.get("sha256"), made_with.get("size")) != (vocab["sha256"], vocab["size"]):
    raise UserError(
        f"{path}: made with another vocabulary ({made_with.get('path')}, "
        f"{made_with.get('size')} pieces, sha256 {made_with.get('sha256')}) than "
        f"task {task_name!r} uses ({vocab['path']}, {vocab['size']} pieces, sha256 "
        f"{vocab['sha256']}); make a copy with `{make_command(task_name)}`"
    )
  if not manifest["documents"]:
    raise UserError(f"task {task_name!r}: empty data source (no documents)")
  return manifest


def stats(task_name: str) -> dict:
  """documents, tokens and mean tokens per document of a committed copy."""
  m = read_manifest(task_name)
  return {k: m[k] for k in ("task", "documents", "tokens", "mean_tokens")}


class TokenizedTask:
  """Random access to a committed copy's documents, in source order across its shards."""

  def __init__(self, task_name: str):
    import grain

    self.name = task_name
    manifest = read_manifest(task_name)
    self.dir = storage.join(task_dir(task_name), manifest["attempt"])
    self.dtype = np.dtype(manifest["dtype"])
    shards = manifest["shards"]
    self.lengths = np.concatenate(
        [np.load(storage.local_copy(storage.join(self.dir, s["lengths_file"]))) for s in shards]
    )
    files: List[str] = [
        storage.local_copy(storage.join(self.dir, s["tokens_file"]))
        for s in shards
        if s["documents"]
    ]
    self._records = grain.sources.ArrayRecordDataSource(files)

  def __len__(self):
    return len(self.lengths)

  def tokens(self, index: int) -> np.ndarray:
    return np.frombuffer(self._records[int(index)], self.dtype)


def shard_names(index: int, count: int) -> Dict[str, str]:
  suffix = f"{index:05d}-of-{count:05d}"
  return {"tokens_file": f"tokens-{suffix}.array_record", "lengths_file": f"lengths-{suffix}.npy"}
