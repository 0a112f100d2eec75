"""Deterministic token sources behind the trainer's data interface.

The interface (what `synthjax.train` needs from any loader):
  - `next_batch() -> dict` of this host's rows: "inputs", "targets", "weights",
    "segment_ids", "positions", each int32 [local_batch, seq_len];
  - `get_state() -> dict` (small, JSON-able) and `set_state(dict)`, restoring exactly;
  - `mixture` (name) and `shares` (component -> token share) for the run record.

Global batch b is rows [b * B, (b + 1) * B) of one deterministic row sequence; host h of H
takes its contiguous slice. So the global batch is the same whatever the host count, and
hosts never share a row.
"""

import os
from typing import Dict

import gin
import numpy as np

from synthjax.errors import UserError


class _RowSource:
  """Rows addressed by a global index; subclasses implement `row(i) -> tokens[seq_len + 1]`."""

  mixture = "natural"
  shares: Dict[str, float] = {"natural": 1.0}

  def row(self, i: int) -> np.ndarray:
    raise NotImplementedError

  def __init__(self, batch_size: int, seq_len: int, process_index: int = 0, process_count: int = 1):
    if batch_size % process_count:
      raise UserError(f"batch size {batch_size} is not divisible by {process_count} hosts")
    self.batch_size, self.seq_len = batch_size, seq_len
    self.local = batch_size // process_count
    self.offset = process_index * self.local
    self.batch_index = 0

  def next_batch(self) -> Dict[str, np.ndarray]:
    start = self.batch_index * self.batch_size + self.offset
    rows = np.stack([self.row(start + i) for i in range(self.local)]).astype(np.int32)
    self.batch_index += 1
    ones = np.ones((self.local, self.seq_len), np.int32)
    return {
        "inputs": rows[:, :-1],
        "targets": rows[:, 1:],
        "weights": ones,
        "segment_ids": ones,
        "positions": np.broadcast_to(
            np.arange(self.seq_len, dtype=np.int32), (self.local, self.seq_len)
        ).copy(),
    }

  def get_state(self) -> dict:
    return {"batch_index": self.batch_index}

  def set_state(self, state: dict) -> None:
    self.batch_index = int(state["batch_index"])


@gin.configurable
class MarkovSource(_RowSource):
  """A learnable synthetic language: tokens from a fixed random sparse bigram chain.

  Each row is generated from its own seed (seed, row), so any row is reproducible alone.
  `domain_seed` picks the transition table: different seeds are different "domains".
  """

  def __init__(
      self,
      batch_size: int,
      seq_len: int,
      vocab_size: int,
      seed: int = 0,
      domain_seed: int = 0,
      branching: int = 4,
      **hosts,
  ):
    super().__init__(batch_size, seq_len, **hosts)
    self.vocab_size, self.seed = vocab_size, seed
    table_rng = np.random.default_rng(1_000_003 + domain_seed)
    self.next_tokens = table_rng.integers(0, vocab_size, (vocab_size, branching))
    self.mixture = f"markov{domain_seed}"
    self.shares = {self.mixture: 1.0}

  def row(self, index: int) -> np.ndarray:
    rng = np.random.default_rng((self.seed, index))
    choices = rng.integers(0, self.next_tokens.shape[1], self.seq_len + 1)
    out = np.empty(self.seq_len + 1, np.int64)
    out[0] = rng.integers(0, self.vocab_size)
    for t in range(1, self.seq_len + 1):
      out[t] = self.next_tokens[out[t - 1], choices[t]]
    return out


@gin.configurable
class ByteFileSource(_RowSource):
  """UTF-8 text file as bytes (token = byte + 1; 0 separates documents), cut into rows.

  Rows wrap around the file, so a budget larger than the file repeats it (the data layer's
  loaders enforce unique-token budgets; this one is for smoke tests and examples).
  """

  def __init__(self, batch_size: int, seq_len: int, path: str, **hosts):
    super().__init__(batch_size, seq_len, **hosts)
    if not os.path.exists(path):
      raise UserError(f"{path}: no such file")
    with open(path, "rb") as f:
      raw = f.read()
    try:
      raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise UserError(f"{path}: invalid UTF-8 at byte {e.start}") from None
    if not raw.strip():
      raise UserError(f"{path}: empty data source (no text)")
    docs = [d for d in raw.split(b"\n") if d.strip()]
    # token = byte + 1, and token 0 ends each document
    self.stream = np.concatenate(
        [np.append(np.frombuffer(d, np.uint8).astype(np.int64) + 1, 0) for d in docs]
    )
    self.mixture = os.path.basename(path)
    self.shares = {"natural": 1.0}

  def row(self, index: int) -> np.ndarray:
    n = self.seq_len + 1
    start = (index * self.seq_len) % len(self.stream)
    idx = (start + np.arange(n)) % len(self.stream)
    return self.stream[idx]
