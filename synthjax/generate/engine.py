"""Batched decoding with a KV cache, static shapes and refilled slots.

A fixed number of batch slots share one KV cache per layer (models/kv_cache.py). Waiting
requests are prefilled `prefill_batch` at a time (0: `default_prefill_batch()`) into free
slots: prompts are padded to a length bucket, so prefill compiles once per bucket and attends
over that bucket only, and a batch takes the oldest waiting request and the waiting ones nearest
its length. Then every decode step advances all busy slots by one token. The cache holds
S <= max_len positions, grown and shrunk in steps of CACHE_STEP to what the busy slots need: a
decode step reads the whole cache, and on a CPU that read is up to half the step. A slot whose
request ends (EOS, a stop string, max new tokens, or a full cache) is freed at once, so one
long output never holds the others back; free slots are refilled as soon as a whole prefill
batch can start (or fewer requests are left).

With `decode_steps` > 1 (0: `default_decode_steps()`), one call runs that many decode steps (a
loop on the device): a row stops within the call at EOS, at its max new tokens or at the end of
the cache, so the host waits once per call instead of once per token, and checks stop strings
on the tokens it gets back.
The tokens are the same as with one step per call.

Sampling runs on device per slot: greedy (temperature 0), temperature, top-k, top-p and a
repetition penalty, with a key derived from the request's own seed and its token index, so a
request's output does not depend on which slot it ran in or which requests shared its batch.
It can depend on the batch's shape: XLA may round a row's products differently at another
number of slots (the generation job keys its outputs by them).

With `draft_tokens` > 0, requests decode speculatively by prompt lookup: the tokens that
followed the latest earlier occurrence of the sequence's last n-gram (rephrasing copies much of
its input) are proposed as a draft, and one forward pass over the slot's newest token and the
draft checks them all. The draft's accepted prefix is kept, plus one token the pass draws
itself. A greedy row accepts a draft token when it is the argmax: the output is plain greedy
decoding's, token for token. A sampled row accepts draft token d with probability p(d) under
its own sampling distribution p, and on rejection draws from p without d, renormalised; the
token is then distributed as p exactly (speculative sampling with a draft that proposes d with
certainty), so the output has plain sampling's distribution (not its exact tokens).

With a `shared_prefix` (token ids most prompts start with: a template's system turn and
instructions), the prefix's keys and values are computed once, and a prompt that starts with
it is prefilled from its end only, attending over the stored prefix. The logits are those of a
whole-prompt prefill up to rounding (XLA rounds products of another shape differently), so
like the batch's shape it is part of a generation job's key.
"""

import functools
from typing import Iterable, List, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synthjax import sharding
from synthjax.errors import UserError
from synthjax.generate import programs
from synthjax.generate.slots import Request, Result, Slots
from synthjax.models import kv_cache
from synthjax.models.config import ModelConfig
from synthjax.models.llama import abstract_params

PREFILL_STEP = 64  # prompts are padded to 16, 32 or a multiple of this
LOOKAHEAD = 4  # waiting requests, in prefill batches, searched for similar lengths
CACHE_STEP = 128  # the KV cache's length changes in steps of this (one copy each time)


def default_prefill_batch() -> int:
  """Prompts prefilled per device call: 1 on a CPU, where batching them gained nothing on the
  real workload (measured: 100.6 against 99.4 tok/s at 4; free slots then wait for a batch),
  8 on an accelerator, where one prompt leaves most of the chip idle (not measured here)."""
  return 1 if jax.default_backend() == "cpu" else 8


def default_decode_steps() -> int:
  """Decode steps per device call: 1 on a CPU (the host's share of a step is under 1% there,
  and the loop costs compile time), 8 on an accelerator, where a step takes milliseconds."""
  return 1 if jax.default_backend() == "cpu" else 8


def default_decode_attention() -> str:
  """'ragged' on a GPU, where JAX ships the kernel; 'dense' elsewhere (a TPU would need its
  paged-attention kernel and a paged cache; on a CPU the kernel only runs interpreted)."""
  return "ragged" if jax.default_backend() == "gpu" else "dense"


def batching(slots: int, decode_steps: int, prefill_batch: int):
  """The decode steps per call and prompts per prefill an engine with these settings uses
  (0: the device's default; a prefill never has more prompts than there are slots)."""
  return (
      decode_steps or default_decode_steps(),
      min(prefill_batch or default_prefill_batch(), slots),
  )


class Engine:

  def __init__(
      self,
      cfg: ModelConfig,
      params,
      eos_ids: Sequence[int],
      slots: int = 8,
      max_len: int = 512,
      buckets: Optional[Sequence[int]] = None,
      mesh=None,
      rules=None,
      decode_text=None,
      draft_tokens: int = 0,
      ngram: int = 3,
      cache_step: int = CACHE_STEP,
      decode_steps: int = 0,
      prefill_batch: int = 0,
      cache_dtype=None,
      shared_prefix: Sequence[int] = (),
      decode_attention: str = "",
  ):
    if cfg.scan_layers:
      raise UserError("generation needs unstacked layers (convert without --scan_layers)")
    # How a decode step reads the cache ('': ragged on a GPU, dense elsewhere; kv_cache.py).
    cfg = cfg.replace(decode_attention=decode_attention or default_decode_attention())
    self.cfg, self.slots, self.max_len = cfg, slots, max_len
    # A ragged cache's length is a multiple of the kernel's block; max_len still ends requests.
    unit = kv_cache.RAGGED_MULTIPLE if cfg.decode_attention == "ragged" else 1
    self.cache_step = -(-cache_step // unit) * unit
    self._longest_cache = -(-max_len // unit) * unit
    # Every prefill has prefill_batch rows (a short batch repeats its first request), so it
    # compiles once per bucket.
    self.decode_steps, self.prefill_batch = batching(slots, decode_steps, prefill_batch)
    buckets = buckets or [16, 32, *range(PREFILL_STEP, max_len + PREFILL_STEP, PREFILL_STEP)]
    self.buckets = sorted(set(min(b, max_len) for b in buckets))
    self.eos_ids = set(int(e) for e in eos_ids)
    self.decode_text = decode_text  # ids -> str, needed for stop strings
    self.mesh = mesh or sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    self.rules = rules or sharding.logical_axis_rules()
    self.param_shardings = sharding.logical_shardings(abstract_params(cfg), self.mesh, self.rules)
    self.params = jax.device_put(nn.unbox(params), self.param_shardings)
    # "length" is never split, so one sharding serves every cache length
    full = jax.eval_shape(lambda: kv_cache.init(cfg, slots, self._longest_cache))
    kv_sharding = {
        n: sharding.named(self.mesh, self.rules, axes, full[0][n].shape)
        for n, axes in kv_cache.axes(cfg).items()
    }
    # The cache's dtype (None: the model's compute dtype) is the prefill's too.
    self.cache = jax.device_put(
        kv_cache.init(cfg, slots, self._size(1), cache_dtype), [kv_sharding] * cfg.L
    )
    seen_sharding = sharding.named(self.mesh, self.rules, ("batch", "vocab"), (slots, cfg.V))
    self.seen = jax.device_put(jnp.zeros((slots, cfg.V), bool), seen_sharding)
    # Every step returns the cache and `seen` sharded as they came in: left to the compiler,
    # the first step returned the cache unsplit (P()), and the next call compiled again.
    self._device = programs.DevicePrograms(
        cfg,
        slots,
        self.decode_steps,
        tuple(sorted(self.eos_ids)),
        self.cache[0]["k"].dtype,
        tuple(kv_sharding.items()),
        seen_sharding,
        sharding.logical_axis_rules(self.rules),
    )
    self._prefill, self._insert, self._resize, self._decode, self._verify = (
        functools.partial(program, self._device)
        for program in (
            programs.prefill,
            programs.insert,
            programs.resize,
            programs.decode,
            programs.verify,
        )
    )
    self.draft_tokens, self.ngram = draft_tokens, ngram
    # prefill and decode passes (calls), the decode steps they ran (model evaluations over the
    # cache), the tokens decoding added to outputs, draft tokens proposed and kept, cache resizes
    self.stats = {
        "prefills": 0,
        "passes": 0,
        "steps": 0,
        "tokens": 0,
        "drafted": 0,
        "accepted": 0,
        "grown": 0,
        "shrunk": 0,
        "from_prefix": 0,
    }
    # The shared prefix's token ids; its keys and values (`_stored_prefix`) are kept padded to
    # a multiple of PREFILL_STEP positions, so that prefixes of other lengths share programs.
    self.shared_prefix = [int(t) for t in shared_prefix]
    self._prefix_width = -(-len(self.shared_prefix) // PREFILL_STEP) * PREFILL_STEP
    self._prefix = None

  def _on_mesh(self, fn, *args):
    """Call a jitted step with the mesh and logical rules in force (set outside of jit)."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return fn(*args)

  # --- host loop --------------------------------------------------------------------------

  def _draft(self, sequence: List[int], limit: int) -> List[int]:
    """Up to `limit` tokens that followed the latest earlier occurrence of the sequence's last
    n-gram (n = self.ngram down to 1); none when it never occurred."""
    for n in range(min(self.ngram, len(sequence) - 1), 0, -1):
      tail = sequence[-n:]
      for start in range(len(sequence) - n - 1, -1, -1):
        if sequence[start : start + n] == tail:
          return sequence[start + n : start + n + limit]
    return []

  def _size(self, need: int) -> int:
    """The cache length that holds `need` positions: a multiple of the step, or the longest."""
    return min(self._longest_cache, -(-max(need, 1) // self.cache_step) * self.cache_step)

  def _fit_cache(self, need: int, shrink: bool) -> None:
    """Grow the cache to hold `need` positions; with `shrink`, also cut it when it is at least
    two steps too long (one step of slack, so a prompt's padding does not make it shrink
    and grow again around every refill)."""
    size, now = self._size(need), kv_cache.length(self.cache)
    if size > now or (shrink and size < now - self.cache_step):
      self.cache = self._on_mesh(self._resize, self.cache, size)
      self.stats["grown" if size > now else "shrunk"] += 1

  def _prefix_length(self, prompts) -> int:
    """How many leading tokens of these prompts the shared prefix's stored keys and values
    give: all of the prefix when every prompt starts with it, has more after it, and what
    follows fits a bucket within the cache; else 0 (the prompts are prefilled whole)."""
    A = len(self.shared_prefix)
    if not A or any(len(p) <= A or list(p[:A]) != self.shared_prefix for p in prompts):
      return 0
    if self._prefix_width + self._bucket(max(len(p) for p in prompts) - A) > self.max_len:
      return 0
    return A

  def _stored_prefix(self):
    """The shared prefix's keys and values (one row, `_prefix_width` positions) and its ids
    padded likewise, computed on first use by the same program as what follows it, over an
    empty prefix."""
    if self._prefix is None:
      A, W, N = len(self.shared_prefix), self._prefix_width, self.prefill_batch
      tokens = np.zeros((N, self._bucket(A)), np.int32)
      tokens[:, :A] = self.shared_prefix
      ids = np.zeros(W, np.int32)
      ids[:A] = self.shared_prefix
      # The empty keys and values go in placed as the stored ones will be: an uncommitted
      # input made this a program of its own, compiled apart from the prompts' (2-3 s).
      on_mesh = sharding.replicated(self.mesh)
      empty = (
          jax.device_put(kv_cache.init(self.cfg, 1, W, self._device.cache_dtype), on_mesh),
          jnp.asarray(ids),
          jnp.int32(0),
      )
      greedy = (jnp.zeros(N), jnp.zeros(N, jnp.int32), jnp.ones(N), jnp.ones(N))
      cache, _, _ = self._on_mesh(
          self._prefill,
          self.params,
          empty,
          jnp.asarray(tokens),
          jnp.full(N, A, jnp.int32),
          greedy,
          jnp.zeros(N, jnp.uint32),
      )
      cache = jax.device_put(
          [
              {
                  n: jax.lax.slice_in_dim(x[:1], 0, W, axis=kv_cache.length_axis(self.cfg)[n])
                  for n, x in layer.items()
              }
              for layer in cache
          ],
          on_mesh,
      )
      self._prefix = (cache, jnp.asarray(ids))
    return self._prefix

  def _bucket(self, n: int) -> int:
    for b in self.buckets:
      if n <= b:
        return b
    raise UserError(f"prompt of {n} tokens is longer than the context ({self.max_len} tokens)")

  def generate(self, requests: Iterable[Request], on_result=None) -> Optional[List[Result]]:
    """Run every request; `on_result(i, result)` is called as each one finishes. Requests are
    taken from the iterable a few prefill batches ahead of the free slots, so a caller can
    stream them; without `on_result` the results come back in request order."""
    state = Slots(
        self.slots,
        self.max_len,
        self.eos_ids,
        requests,
        LOOKAHEAD * self.prefill_batch,
        self.decode_text,
        on_result,
    )
    self._retire_and_refill(state)
    while any(o >= 0 for o in state.owner):
      busy = state.busy()
      proposal = self._drafts(state, busy)
      self._fit_cache(
          state.need(self.decode_steps if proposal is None else self.draft_tokens + 1),
          shrink=True,
      )
      new = (
          self._decode_pass(state, busy)
          if proposal is None
          else self._verify_pass(state, busy, proposal)
      )
      self.stats["passes"] += 1
      for slot in np.flatnonzero(busy):
        self.stats["tokens"] += state.append(int(slot), new[slot])
      self._retire_and_refill(state)
    return None if on_result else state.in_order()

  def _retire_and_refill(self, state: Slots) -> None:
    """Free every ended slot; start waiting requests a prefill batch at a time while a whole
    batch fits the free slots, or all that are left do."""
    while True:
      for slot in range(self.slots):
        state.retire(slot)
      state.read_ahead()
      free = state.free()
      n = min(self.prefill_batch, len(state.waiting))
      if n == 0 or len(free) < n:
        return
      self._prefill_into(state, state.next_batch(n), free[:n])

  def _prefill_into(self, state: Slots, batch: List[int], slots: List[int]) -> None:
    """Prefill the requests into the slots, one device call for the whole batch."""
    rows = batch + batch[:1] * (self.prefill_batch - len(batch))
    A = self._prefix_length([state.live[i].prompt for i in rows])
    prompts = [state.live[i].prompt[A:] for i in rows]
    tokens = np.zeros((len(rows), self._bucket(max(map(len, prompts)))), np.int32)
    for r, p in enumerate(prompts):
      tokens[r, : len(p)] = p
    new_cache, new_seen, first = self._on_mesh(
        self._prefill,
        self.params,
        (*self._stored_prefix(), jnp.int32(A)) if A else None,
        jnp.asarray(tokens),
        jnp.asarray(list(map(len, prompts)), jnp.int32),
        state.sampling_arrays(rows),
        jnp.asarray(state.seeds(rows)),
    )
    self.stats["prefills"] += 1
    self.stats["from_prefix"] += len(batch) if A else 0
    self._fit_cache(
        max(state.need(1), (self._prefix_width if A else 0) + tokens.shape[1]), shrink=False
    )
    targets = slots + slots[:1] * (len(rows) - len(slots))  # a repeat writes its slot again
    self.cache, self.seen = self._on_mesh(
        self._insert, self.cache, self.seen, jnp.asarray(targets, jnp.int32), new_cache, new_seen
    )
    for slot, i, token in zip(slots, batch, np.asarray(first)):
      state.start(slot, i, int(token))

  def _drafts(self, state: Slots, busy: np.ndarray):
    """[slots, draft_tokens] proposals and their lengths, or None when a pass over them would
    run past a busy slot's cache (then this step decodes plainly)."""
    k = self.draft_tokens
    if not k or any(state.lengths[s] + k + 1 > self.max_len for s in np.flatnonzero(busy)):
      return None
    tokens, counts = np.zeros((self.slots, k), np.int32), np.zeros(self.slots, np.int32)
    for s in np.flatnonzero(busy):
      d = self._draft(state.sequence(int(s)), k)
      tokens[s, : len(d)], counts[s] = d, len(d)
    return (tokens, counts) if counts.any() else None

  def _decode_pass(self, state: Slots, busy: np.ndarray) -> List[List[int]]:
    """decode_steps plain steps for every busy slot: each slot's new tokens."""
    self.cache, self.seen, steps_NxB = self._on_mesh(
        self._decode,
        self.params,
        self.cache,
        self.seen,
        jnp.asarray(state.last),
        jnp.asarray(state.lengths),
        jnp.asarray(busy),
        state.sampling_arrays(state.owner),
        jnp.asarray(state.seeds(state.owner)),
        jnp.asarray(state.counts()),
        jnp.asarray(state.room()),
    )
    steps_NxB = np.asarray(steps_NxB)
    self.stats["steps"] += int((steps_NxB >= 0).any(axis=1).sum())
    return [[int(t) for t in steps_NxB[:, s] if t >= 0] for s in range(self.slots)]

  def _verify_pass(self, state: Slots, busy: np.ndarray, proposal) -> List[List[int]]:
    """One pass over each busy slot's newest token and its draft: the draft's accepted prefix
    and the token the pass draws after it."""
    tokens = np.concatenate([state.last[:, None], proposal[0]], axis=1)
    self.cache, self.seen, next_BxT, kept = self._on_mesh(
        self._verify,
        self.params,
        self.cache,
        self.seen,
        jnp.asarray(tokens),
        jnp.asarray(state.lengths),
        jnp.asarray(busy),
        jnp.asarray(proposal[1]),
        state.sampling_arrays(state.owner),
        jnp.asarray(state.seeds(state.owner)),
        jnp.asarray(state.counts()),
    )
    next_BxT, kept = np.asarray(next_BxT), np.asarray(kept)
    self.stats["steps"] += 1
    self.stats["drafted"] += int(proposal[1].sum())
    self.stats["accepted"] += int(kept[busy].sum())
    return [[int(t) for t in next_BxT[s, : kept[s] + 1]] for s in range(self.slots)]
