"""Text sources, each a real loader: files by glob, local or on an object store (JSONL, plain
text, Parquet, ArrayRecord), TFDS datasets by name, and the generator's output shards (JSONL
with provenance).

Every document comes out as a dict with at least "id" and "text".
"""

import json
import os
from typing import Dict, Iterator, List

from synthjax import jsonl, storage
from synthjax.errors import UserError


def expand(pattern: str) -> List[str]:
  files = storage.glob(pattern)
  if not files and storage.isdir(pattern):
    raise UserError(
        f"{pattern}: a folder, not a file glob; name its files, e.g. "
        f"{storage.join(pattern, '*.jsonl')}"
    )
  if not files:
    raise UserError(f"{pattern}: no such file (nothing matches)")
  return files


def _jsonl(path: str, field: str) -> Iterator[Dict]:
  for i, rec in jsonl.records(path):
    if not isinstance(rec, dict) or not isinstance(rec.get(field), str):
      raise UserError(f"{path}:{i}: no string field {field!r}")
    rec.setdefault("id", f"{os.path.basename(path)}:{i}")
    rec["text"] = rec[field]
    yield rec


def _text(path: str) -> Iterator[Dict]:
  raw = storage.read_bytes(path)
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise UserError(f"{path}: invalid UTF-8 at byte {e.start}") from None
  for i, line in enumerate(text.splitlines(), start=1):
    if line.strip():
      yield {"id": f"{os.path.basename(path)}:{i}", "text": line}


def _parquet(path: str, field: str) -> Iterator[Dict]:
  import pyarrow.parquet as pq

  try:
    with storage.open_file(path) as f:
      table = pq.read_table(f)
  except Exception as e:  # pyarrow raises its own error types for broken files
    raise UserError(f"{path}: unreadable Parquet file ({str(e).splitlines()[0]})") from None
  if field not in table.column_names:
    raise UserError(f"{path}: no column {field!r} (columns: {', '.join(table.column_names)})")
  for i, rec in enumerate(table.to_pylist()):
    rec.setdefault("id", f"{os.path.basename(path)}:{i}")
    rec["text"] = rec[field]
    yield rec


def _array_record(path: str, field: str) -> Iterator[Dict]:
  from array_record.python.array_record_module import ArrayRecordReader

  reader = ArrayRecordReader(storage.local_copy(path))
  try:
    for i in range(reader.num_records()):
      raw = reader.read([i])[0]
      try:
        rec = json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, json.JSONDecodeError):
        rec = {field: raw.decode("utf-8", errors="strict")}
      rec.setdefault("id", f"{os.path.basename(path)}:{i}")
      rec["text"] = rec[field]
      yield rec
  except UnicodeDecodeError as e:
    raise UserError(f"{path}: record is not UTF-8 text (byte {e.start})") from None
  finally:
    reader.close()


def read_documents(pattern: str, text_field: str = "text") -> Iterator[Dict]:
  """Documents of every file the glob matches, in sorted file order."""
  for path in expand(pattern):
    n = 0
    if path.endswith((".jsonl", ".json")):
      docs = _jsonl(path, text_field)
    elif path.endswith(".parquet"):
      docs = _parquet(path, text_field)
    elif path.endswith(".array_record") or ".array_record-" in path:
      docs = _array_record(path, text_field)
    else:
      docs = _text(path)
    for doc in docs:
      n += 1
      yield doc
    if n == 0:
      raise UserError(f"{path}: empty file (no documents)")


def local_source(pattern: str, text_field: str = "text"):
  """A seqio DataSource over files (local or on an object store; one split, 'train'). Its
  shards are the files in sorted order, read one after another, so reading shard by shard
  (the Beam tokenizer) and reading the whole source give documents in the same order."""
  import seqio  # imported here: TensorFlow is slow to load and chatty, readers need neither
  import tensorflow as tf

  expand(pattern)  # fail now, not inside tf.data
  signature = {"id": tf.TensorSpec((), tf.string), "text": tf.TensorSpec((), tf.string)}

  def read_file(filename):
    return tf.data.Dataset.from_generator(
        lambda name: (
            {"id": str(d["id"]), "text": d["text"]}
            for d in read_documents(name.decode(), text_field)
        ),
        args=(filename,),
        output_signature=signature,
    )

  class _Files(seqio.FileDataSource):

    def list_shards(self, split):
      return expand(pattern)  # through the storage layer (seqio's own glob uses tf.io.gfile)

  source = _Files(read_file, {"train": pattern}, cycle_length=1, block_length=1)
  source.synthjax_pattern = pattern  # the token cache keys on these files' stamps
  return source


def tfds_source(name: str, split_map=None, data_dir=None):
  """A TFDS dataset by name, e.g. 'c4/en:3.1.0' (needs the data prepared in data_dir)."""
  import seqio

  return seqio.TfdsDataSource(tfds_name=name, splits=split_map, tfds_data_dir=data_dir)


def tfds_documents(name: str, text_field: str = "text", split: str = "train") -> Iterator[Dict]:
  """A split of a TFDS dataset (or a piece of one: 'train[0%:25%]') as documents, in its
  stored order."""
  import tensorflow_datasets as tfds

  ds = tfds.load(name, split=split, shuffle_files=False)
  for i, ex in enumerate(tfds.as_numpy(ds)):
    yield {"id": f"tfds:{name}:{split}:{i}", "text": ex[text_field].decode("utf-8")}


def parts(spec: str) -> List[str]:
  """A source cut into parts that hosts read independently, in order: a glob's files, or a
  TFDS dataset's train split in 100 slices of 1% ('tfds:NAME|train[0%:1%]', ...)."""
  if spec.startswith("tfds:"):
    return [f"{spec}|train[{k}%:{k + 1}%]" for k in range(100)]
  return expand(spec)


def part_documents(part: str, text_field: str = "text") -> Iterator[Dict]:
  """The documents of one part (see `parts`)."""
  if part.startswith("tfds:"):
    name, _, split = part[len("tfds:") :].partition("|")
    return tfds_documents(name, text_field, split or "train")
  return read_documents(part, text_field)
