"""The host's side of batched decoding: which request each of the engine's slots runs, how long
its cache is, its newest token and its output so far; the requests read but not started; and
the rules that end a request and pick the next prefill batch. No device work happens here."""

import dataclasses
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from synthjax.errors import UserError
from synthjax.generate.sampling import Sampling


@dataclasses.dataclass
class Request:
  prompt: Sequence[int]
  sampling: Sampling = Sampling()
  stop: Sequence[str] = ()


@dataclasses.dataclass
class Result:
  tokens: List[int]
  finish: str  # "eos", "stop", "length" (max new tokens) or "context" (cache full)


class Slots:
  """Slot state for one `Engine.generate` call. A slot is free when its owner is -1."""

  def __init__(
      self,
      n: int,
      max_len: int,
      eos_ids: Iterable[int],
      requests: Iterable[Request],
      read_ahead: int,
      decode_text: Optional[Callable] = None,
      on_result: Optional[Callable] = None,
  ):
    self.n, self.max_len, self.eos_ids = n, max_len, set(eos_ids)
    self.decode_text, self.on_result = decode_text, on_result
    self._pending = enumerate(requests)
    self._read_ahead = read_ahead
    self.live: Dict[int, Request] = {}
    self.results: Dict[int, Result] = {}
    self.waiting: List[int] = []  # requests read but not started, oldest first
    self.owner = [-1] * n
    self.lengths = np.zeros(n, np.int32)  # tokens in each slot's cache
    self.last = np.zeros(n, np.int32)  # each slot's newest token (not yet cached)
    self.out: List[List[int]] = [[] for _ in range(n)]

  def read_ahead(self) -> None:
    """Read requests until `read_ahead` wait, checking each as it comes."""
    while len(self.waiting) < self._read_ahead:
      i, r = next(self._pending, (None, None))
      if r is None or i is None:
        return
      if len(r.prompt) == 0:
        raise UserError(f"request {i}: empty prompt")
      if len(r.prompt) >= self.max_len:
        raise UserError(
            f"request {i}: prompt of {len(r.prompt)} tokens is longer than the "
            f"context ({self.max_len} tokens)"
        )
      if r.stop and self.decode_text is None:
        raise UserError("stop strings need the engine's decode_text")
      self.live[i] = r
      self.waiting.append(i)

  def busy(self) -> np.ndarray:
    return np.asarray([o >= 0 for o in self.owner])

  def free(self) -> List[int]:
    return [s for s in range(self.n) if self.owner[s] < 0]

  def need(self, extra: int) -> int:
    """Cache positions the busy slots need for a pass adding `extra` tokens to each."""
    return max([int(self.lengths[s]) + extra for s in range(self.n) if self.owner[s] >= 0] + [0])

  def sampling_arrays(self, rows: Sequence[int]):
    """The sampling settings of these requests (-1: a free slot, greedy), one array each."""
    fields = ("temperature", "top_k", "top_p", "repetition_penalty")
    dtypes = (np.float32, np.int32, np.float32, np.float32)
    return tuple(
        jnp.asarray([getattr(self.live[i].sampling, f) if i >= 0 else d(0) for i in rows], d)
        for f, d in zip(fields, dtypes)
    )

  def seeds(self, rows: Sequence[int]) -> np.ndarray:
    return np.asarray([self.live[i].sampling.seed if i >= 0 else 0 for i in rows], np.uint32)

  def counts(self) -> np.ndarray:
    """The token index each slot's next sampling key is for."""
    return np.asarray([len(x) for x in self.out], np.int32)

  def room(self) -> np.ndarray:
    """Tokens each slot may still take: its last one ends it by length or by a full cache."""
    return np.asarray(
        [
            min(
                self.live[o].sampling.max_new_tokens - len(self.out[s]),
                self.max_len - 1 - self.lengths[s],
            )
            if o >= 0
            else 0
            for s, o in enumerate(self.owner)
        ],
        np.int32,
    )

  def sequence(self, slot: int) -> List[int]:
    """The slot's prompt and output so far."""
    return list(self.live[self.owner[slot]].prompt) + self.out[slot]

  def next_batch(self, n: int) -> List[int]:
    """The oldest waiting request and the n - 1 others nearest its length (oldest first
    among equals), so little of a batch's bucket is padding."""
    head = len(self.live[self.waiting[0]].prompt)
    nearest = sorted(self.waiting[1:], key=lambda i: abs(len(self.live[i].prompt) - head))
    batch = [self.waiting[0]] + nearest[: n - 1]
    for i in batch:
      self.waiting.remove(i)
    return batch

  def start(self, slot: int, request: int, first_token: int) -> None:
    """The request now runs in the slot, its prompt cached and its first token drawn."""
    self.owner[slot], self.lengths[slot] = request, len(self.live[request].prompt)
    self.last[slot] = first_token
    self.out[slot] = [first_token]

  def finish_reason(self, slot: int) -> Optional[str]:
    req = self.live[self.owner[slot]]
    if self.out[slot][-1] in self.eos_ids:
      return "eos"
    if (
        req.stop
        and self.decode_text
        and any(s in self.decode_text(self.out[slot]) for s in req.stop)
    ):
      return "stop"
    if len(self.out[slot]) >= req.sampling.max_new_tokens:
      return "length"
    if self.lengths[slot] + 1 >= self.max_len:
      return "context"
    return None

  def append(self, slot: int, tokens: Sequence[int]) -> int:
    """Add a pass's tokens to the slot one at a time, so every stop rule sees each; returns
    how many were kept (the rest come after the request ended)."""
    kept = 0
    for token in tokens:
      kept += 1
      self.lengths[slot] += 1
      self.last[slot] = token
      self.out[slot].append(token)
      if self.finish_reason(slot):
        break
    return kept

  def retire(self, slot: int) -> None:
    """Report the slot's request and free the slot, if the request has ended."""
    reason = self.finish_reason(slot) if self.owner[slot] >= 0 else None
    if reason is None:
      return
    i = self.owner[slot]
    del self.live[i]
    if self.on_result:
      self.on_result(i, Result(self.out[slot], reason))
    else:
      self.results[i] = Result(self.out[slot], reason)
    self.owner[slot] = -1

  def in_order(self) -> List[Result]:
    return [self.results[i] for i in range(len(self.results))]
