"""Tokenize a seqio Task once into ArrayRecord, cached by a content hash.

    CACHE/<task>-<hash>/tokens.array_record   one record per document: int32 token ids
    CACHE/<task>-<hash>/lengths.npy           tokens per document (the loader plans with it)
    CACHE/<task>-<hash>/stats.json            documents, tokens, mean tokens (written last)

The hash covers the task name, the vocabulary file's bytes and, for file-backed sources, the
bytes of every input file, so changed data or a changed vocabulary never reuses a stale cache.
"""
import glob
import hashlib
import json
import os
import shutil
import tempfile

import gin
import numpy as np
import seqio

from synthjax import atomic
from synthjax.errors import UserError

@gin.configurable
def cache_dir(path: str = None) -> str:
  return (path or os.environ.get("SYNTHJAX_CACHE")
          or os.path.join(os.path.expanduser("~"), ".cache", "synthjax", "tokens"))


def _hash_file(h, path):
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)


def fingerprint(task: seqio.Task) -> str:
  h = hashlib.sha256(task.name.encode())
  vocab = task.output_features["targets"].vocabulary
  vocab_file = getattr(vocab, "sentencepiece_model_file", None) or getattr(vocab, "_path", None)
  if vocab_file and os.path.exists(vocab_file):
    _hash_file(h, vocab_file)
  else:
    h.update(repr(vocab).encode())
  pattern = getattr(task.source, "synthjax_pattern", None)
  if pattern:
    for path in sorted(glob.glob(pattern, recursive=True)):
      h.update(path.encode())
      _hash_file(h, path)
  return h.hexdigest()[:16]


def task_dir(task_name: str) -> str:
  task = _task(task_name)
  return os.path.join(cache_dir(), f"{task_name}-{fingerprint(task)}")


def _task(name: str) -> seqio.Task:
  if name not in seqio.TaskRegistry.names():
    raise UserError(f"unknown task {name!r} (registered: "
                    f"{', '.join(sorted(seqio.TaskRegistry.names())) or 'none'})")
  return seqio.get_mixture_or_task(name)


def materialize(task_name: str, split: str = "train") -> str:
  """Tokenize the task (once) and return its cache folder."""
  from array_record.python.array_record_module import ArrayRecordWriter
  out = task_dir(task_name)
  if os.path.exists(os.path.join(out, "stats.json")):
    return out
  task = _task(task_name)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.tmp")
  try:
    writer = ArrayRecordWriter(os.path.join(tmp, "tokens.array_record"), "group_size:1")
    lengths = []
    ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False,
                          num_epochs=1)
    for ex in ds.as_numpy_iterator():
      tokens = np.asarray(ex["targets"], np.int32)
      if len(tokens) <= 1:  # only EOS: an empty document
        continue
      writer.write(tokens.tobytes())
      lengths.append(len(tokens))
    writer.close()
    if not lengths:
      raise UserError(f"task {task_name!r}: empty data source (no documents)")
    lengths = np.asarray(lengths, np.int64)
    np.save(os.path.join(tmp, "lengths.npy"), lengths)
    atomic.write_json(os.path.join(tmp, "stats.json"), {
        "task": task_name, "documents": int(len(lengths)), "tokens": int(lengths.sum()),
        "mean_tokens": float(lengths.mean())})
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return out


def stats(task_name: str) -> dict:
  with open(os.path.join(materialize(task_name), "stats.json")) as f:
    return json.load(f)


class TokenizedTask:
  """Random access to a materialized task's documents."""

  def __init__(self, task_name: str):
    import grain
    self.name = task_name
    self.dir = materialize(task_name)
    self.lengths = np.load(os.path.join(self.dir, "lengths.npy"))
    self._records = grain.sources.ArrayRecordDataSource(
        [os.path.join(self.dir, "tokens.array_record")])

  def __len__(self):
    return len(self.lengths)

  def tokens(self, index: int) -> np.ndarray:
    return np.frombuffer(self._records[int(index)], np.int32)
