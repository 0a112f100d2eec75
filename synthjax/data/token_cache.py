"""Tokenized copies of seqio Tasks: one copy per task and content, shared by every job and host
of a study, local or on an object store. `synthjax.data.tokenize` (Apache Beam) makes them;
jobs only read them, and a missing one is an error naming the command that makes it.

    CACHE/<task>-<fingerprint>/manifest.json        written last: commits the copy
    CACHE/<task>-<fingerprint>/<attempt>/tokens-00003-of-00008.bin
                                                    that shard's documents' token ids, end to end
    CACHE/<task>-<fingerprint>/<attempt>/lengths-00003-of-00008.npy
                                                    tokens per document of that shard

A document is a byte range of its shard's tokens file, so a job reads exactly the documents it
needs where the copy lives: a local file is read at the document's offset, an object by ranged
requests (concurrently for a batch). No host copies a source's shards to its own disk.

The fingerprint covers the task's name, source (file names, sizes and the store's checksums or
modification stamps: no input byte is read), the vocabulary's bytes and the layout above
(FORMAT). Every tokenization writes into a fresh attempt folder and nothing here is ever
deleted, so a job reading a copy is never disturbed by another job making one; the manifest
names the attempt it commits.
"""

import hashlib
import io
import json
import os
from typing import Dict, List, Optional

import gin
import numpy as np
from numpy.typing import ArrayLike

from synthjax import quiet

quiet.import_tensorflow()  # seqio loads it: its start-up lines stay out of a binary's output
import seqio

from synthjax import storage
from synthjax.errors import UserError

MANIFEST = "manifest.json"
FORMAT = "flat-1"  # a change of layout makes new copies beside the old ones


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
  h.update(FORMAT.encode())
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
  """Random access to a committed copy's documents, in source order across its shards.

  Holds the documents' lengths and start offsets (12 bytes a document); the tokens stay where
  the copy is."""

  def __init__(self, task_name: str):
    self.name = task_name
    manifest = read_manifest(task_name)
    self.dir = storage.join(task_dir(task_name), manifest["attempt"])
    self.dtype = np.dtype(manifest["dtype"])
    shards = [s for s in manifest["shards"] if s["documents"]]
    lengths = [
        np.load(io.BytesIO(storage.read_bytes(storage.join(self.dir, s["lengths_file"]))))
        for s in shards
    ]
    self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
    self._paths = [storage.join(self.dir, s["tokens_file"]) for s in shards]
    # shard k holds documents [_first_doc[k], _first_doc[k + 1]); document i starts at token
    # _starts[i] of the copy, so at _starts[i] - _starts[_first_doc[k]] of its shard
    self._first_doc = np.cumsum([0] + [len(x) for x in lengths])
    self._starts = np.cumsum(self.lengths, dtype=np.int64) - self.lengths
    self._local = not storage.is_remote(self.dir)

  def __len__(self):
    return len(self.lengths)

  def tokens(self, index: int) -> np.ndarray:
    return self.read([index])[0]

  def read(
      self,
      docs: ArrayLike,
      begin: Optional[ArrayLike] = None,
      end: Optional[ArrayLike] = None,
  ) -> List[np.ndarray]:
    """Tokens [begin[k], end[k]) of document docs[k] (whole documents by default)."""
    index = np.asarray(docs, np.int64)
    first = np.zeros(len(index), np.int64) if begin is None else np.asarray(begin, np.int64)
    stop = self.lengths[index].astype(np.int64) if end is None else np.asarray(end, np.int64)
    shard = np.searchsorted(self._first_doc, index, side="right") - 1
    at = self._starts[index] - self._starts[self._first_doc[shard]]
    lo, hi = at + first, at + stop
    size = self.dtype.itemsize
    if self._local:  # a file opened per read: a copy of many shards holds no descriptors
      return [
          np.fromfile(self._paths[s], self.dtype, b - a, offset=a * size)
          for s, a, b in zip(shard, lo, hi)
      ]
    chunks = storage.read_ranges([self._paths[s] for s in shard], lo * size, hi * size)
    return [np.frombuffer(c, self.dtype) for c in chunks]

  def shard_tokens(self, block: int = 1 << 24):
    """Every token of the copy, shard by shard in blocks of at most `block` tokens."""
    size = self.dtype.itemsize
    for k, path in enumerate(self._paths):
      n = int(self.lengths[self._first_doc[k] : self._first_doc[k + 1]].sum(dtype=np.int64))
      for a in range(0, n, block):
        b = min(a + block, n)
        if self._local:
          yield np.fromfile(path, self.dtype, b - a, offset=a * size)
        else:
          (chunk,) = storage.read_ranges([path], [a * size], [b * size])
          yield np.frombuffer(chunk, self.dtype)


def shard_names(index: int, count: int) -> Dict[str, str]:
  suffix = f"{index:05d}-of-{count:05d}"
  return {"tokens_file": f"tokens-{suffix}.bin", "lengths_file": f"lengths-{suffix}.npy"}
