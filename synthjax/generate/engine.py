"""Batched decoding with a KV cache, static shapes and refilled slots.

A fixed number of batch slots share one KV cache per layer (llama.CACHE_AXES). Waiting
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

import dataclasses
import functools
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synthjax import sharding
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig
from synthjax.models.llama import (
    CACHE_AXES,
    CACHE_LENGTH_AXIS,
    Transformer,
    abstract_params,
    cache_length,
    init_cache,
)


@dataclasses.dataclass(frozen=True)
class Sampling:
  temperature: float = 0.0  # 0 = greedy
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1 = off
  repetition_penalty: float = 1.0
  max_new_tokens: int = 128
  seed: int = 0


@dataclasses.dataclass
class Request:
  prompt: Sequence[int]
  sampling: Sampling = Sampling()
  stop: Sequence[str] = ()


@dataclasses.dataclass
class Result:
  tokens: List[int]
  finish: str  # "eos", "stop", "length" (max new tokens) or "context" (cache full)


MAX_CANDIDATES = 64  # top-k / top-p choose among at most this many highest logits
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


def batching(slots: int, decode_steps: int, prefill_batch: int):
  """The decode steps per call and prompts per prefill an engine with these settings uses
  (0: the device's default; a prefill never has more prompts than there are slots)."""
  return (
      decode_steps or default_decode_steps(),
      min(prefill_batch or default_prefill_batch(), slots),
  )


def _nucleus(values, top_k_B, top_p_B):
  """Each row's top-k and top-p nucleus among its MAX_CANDIDATES best tokens (`values`: their
  logits over the temperature, sorted descending): the values, -inf outside. A full sort of a
  50k vocabulary costs more than a decode step on a CPU; a nucleus of p <= 0.95 from a trained
  model rarely spans more candidates."""
  rank = jnp.arange(values.shape[-1])[None]
  values = jnp.where((top_k_B[:, None] > 0) & (rank >= top_k_B[:, None]), -jnp.inf, values)
  mass_before = jnp.cumsum(jax.nn.softmax(values, axis=-1), axis=-1) - jax.nn.softmax(
      values, axis=-1
  )
  return jnp.where(mass_before >= top_p_B[:, None], -jnp.inf, values)  # keeps rank 0 always


def _argmax(x_BxV):
  """Each row's first index of its maximum, as jnp.argmax (a NaN row gives the last index).
  XLA:CPU runs argmax as one reduction over (value, index) pairs: 6.7 ms on [64, 49152],
  against 1.8 ms for a max and then a min over the indices that reach it (measured)."""
  V = x_BxV.shape[-1]
  best = jnp.max(x_BxV, axis=-1, keepdims=True)
  first = jnp.min(jnp.where(x_BxV == best, jnp.arange(V), V), axis=-1)
  return jnp.minimum(first, V - 1).astype(jnp.int32)


def _draw(keys, values, ids, draft_B=None):
  """One token per row from p = softmax(values) over token `ids`. With a draft token d per row
  (-1: none): d with probability p(d), else a draw from p without d, renormalised; either way
  the token is distributed as p. The draw uses the row's key itself, so a row without a draft
  gets the token a plain draw gives."""
  if draft_B is None:
    choice = jax.vmap(jax.random.categorical)(keys, values)
    return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
  is_draft = ids == draft_B[:, None]
  p_draft = jnp.sum(jnp.where(is_draft, jax.nn.softmax(values, axis=-1), 0.0), axis=-1)
  u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1)))(keys)
  drawn = _draw(keys, jnp.where(is_draft, -jnp.inf, values), ids)
  return jnp.where(u < p_draft, draft_B.astype(jnp.int32), drawn)


def _penalised(logits_BxV, penalty_B, seen_BxV):
  """Logits with the repetition penalty applied to the tokens a row has seen."""
  logits = logits_BxV.astype(jnp.float32)
  penalty = penalty_B[:, None]
  return jnp.where(seen_BxV, jnp.where(logits > 0, logits / penalty, logits * penalty), logits)


def sample_tokens(
    logits_BxV, keys, temperature_B, top_k_B, top_p_B, penalty_B, seen_BxV, draft_B=None
):
  """One token per row under that row's own sampling settings (greedy when temperature is 0);
  an all-greedy batch skips sampling altogether. With `draft_B` (a proposed token per row, -1
  for none), a sampled row keeps the draft token with probability p(draft) and otherwise draws
  from p without it (see `_draw`); a greedy row's token is the argmax either way. A row
  accepted its draft when the token returned equals it."""
  logits = _penalised(logits_BxV, penalty_B, seen_BxV)
  sampling = temperature_B > 0
  # The argmax runs only when some row is greedy: a pass over [rows, vocab] was 3% of a
  # sampled 32-slot decode step on a CPU (measured).
  greedy = jax.lax.cond(
      (~sampling).any(), _argmax, lambda x: jnp.zeros(x.shape[0], jnp.int32), logits
  )
  truncating = sampling & ((top_k_B > 0) | (top_p_B < 1.0))
  temperature = jnp.maximum(temperature_B, 1e-6)[:, None]

  def draw(_):
    # Each draw runs only when some row needs it: a full-vocabulary draw costs about a fifth
    # of a 32-slot decode step on a CPU, and top-k / top-p rows never use it.
    none = jnp.zeros_like(greedy)

    def draw_full():
      vocab = jnp.broadcast_to(jnp.arange(logits.shape[-1]), logits.shape)
      return _draw(keys, logits / temperature, vocab, draft_B)

    def draw_cut():
      # Dividing by a positive temperature keeps the order, so only the candidates are
      # divided: a pass over the whole [rows, vocab] block took 10 ms of a 64-slot decode
      # step on a CPU (measured). XLA:CPU runs this top_k as a partial sort (3.2 ms here);
      # outside the cond it compiled to a full sort of the vocabulary (96 ms).
      best, best_ids = jax.lax.top_k(logits, min(MAX_CANDIDATES, logits.shape[-1]))
      return _draw(keys, _nucleus(best / temperature, top_k_B, top_p_B), best_ids, draft_B)

    full = jax.lax.cond((sampling & ~truncating).any(), draw_full, lambda: none)
    cut = jax.lax.cond(truncating.any(), draw_cut, lambda: none)
    return jnp.where(truncating, cut, full)

  sampled = jax.lax.cond(sampling.any(), draw, lambda _: greedy, None)
  return jnp.where(sampling, sampled, greedy)


def _zero_padded(x, size: int, axis: int):
  """x with zeros appended along `axis` up to `size`."""
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths)


@dataclasses.dataclass(frozen=True)
class _Device:
  """What an engine's device programs depend on besides their arguments' shapes. The programs
  (module-level jits below) take it as a static argument, so engines that agree on it share
  traces and compiled programs: the micro study's two synthetic kinds, one generator with the
  same slots, trace and compile each prompt bucket and cache length once per process instead
  of once per kind. The programs then live as long as the process, not the engine."""

  cfg: ModelConfig
  slots: int
  decode_steps: int
  eos_ids: Tuple[int, ...]
  cache_dtype: Any
  kv_sharding: Tuple[Tuple[str, Any], ...]  # ("k", sharding), ("v", sharding)
  seen_sharding: Any
  rules: Tuple  # flax's logical axis rules, in force while the programs trace

  def apply(self, params, *args):
    return Transformer(self.cfg).apply({"params": params}, *args)

  def pinned(self, cache, seen=None):
    kv, rows = dict(self.kv_sharding), self.seen_sharding
    cache = [
        {n: jax.lax.with_sharding_constraint(x, kv[n]) for n, x in layer.items()} for layer in cache
    ]
    return cache if seen is None else (cache, jax.lax.with_sharding_constraint(seen, rows))

  def prefill(self, params, prefix, tokens_NxP, lengths_N, sampling, seeds_N):
    """N prompts' keys and values (a cache of their padded length P), the tokens each has seen
    and its first new token. With `prefix` (the keys, values and ids of A tokens every prompt
    starts with, one row, padded to W >= A positions; and A), tokens_NxP are what follows it,
    written from position A, and the cache holds W + P positions (those from A + the prompt's
    length on are padding). Compiled once per prompt bucket (and W), whatever the cache's
    length or A: templates with other heads share the programs."""
    N, P_len = tokens_NxP.shape
    rows = jnp.arange(N)
    seen = jnp.zeros((N, self.cfg.V), bool)
    if prefix is None:
      A, W = 0, 0
      new_cache = init_cache(self.cfg, N, P_len, self.cache_dtype)
    else:
      prefix_cache, prefix_ids_W, A = prefix
      W = len(prefix_ids_W)
      new_cache = [
          {
              n: _zero_padded(
                  jnp.broadcast_to(x, (N, *x.shape[1:])), W + P_len, CACHE_LENGTH_AXIS[n]
              )
              for n, x in layer.items()
          }
          for layer in prefix_cache
      ]
      seen = seen.at[:, prefix_ids_W].max(jnp.broadcast_to(jnp.arange(W) < A, (N, W)))
    positions = A + jnp.broadcast_to(jnp.arange(P_len), (N, P_len))
    valid = (jnp.arange(P_len)[None] < lengths_N[:, None]).astype(jnp.int32)
    kv_positions = jnp.broadcast_to(jnp.arange(W + P_len), (N, W + P_len))
    kv_valid = (kv_positions < A + lengths_N[:, None]).astype(jnp.int32)
    logits, new_cache = self.apply(
        params,
        tokens_NxP,
        positions,
        valid,
        new_cache,
        jnp.full((N,), A, jnp.int32),
        kv_positions,
        kv_valid,
        lengths_N - 1,
    )
    seen = seen.at[rows[:, None], tokens_NxP].max(valid > 0)
    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 0))(seeds_N)
    tokens_N = sample_tokens(logits[:, 0], keys, *sampling, seen)
    return new_cache, seen.at[rows, tokens_N].set(True), tokens_N

  def insert(self, cache, seen, slots_N, new_cache, new_seen):
    """Write prefilled prompts over their slots' first positions (later ones stay masked until
    decoding writes them). Rows that repeat a slot carry the same data."""
    S = cache_length(cache)
    if cache[0]["k"].dtype.itemsize == 2:
      # XLA:CPU runs a dynamic-update-slice into a bf16 array through a whole-cache f32 copy
      # (53 ms a prompt, measured); a select over the cache is one pass for the whole batch.
      row_B = (
          jnp.full((self.slots,), -1, jnp.int32)
          .at[slots_N]
          .set(jnp.arange(len(slots_N), dtype=jnp.int32))
      )

      def put(c, new, axis):
        padded = _zero_padded(new, S, axis)
        return jnp.where((row_B >= 0)[:, None, None, None], padded[jnp.maximum(row_B, 0)], c)

    else:

      def put(c, new, axis):
        for n in range(len(slots_N)):
          c = jax.lax.dynamic_update_slice(c, new[n : n + 1], (slots_N[n], 0, 0, 0))
        return c

    cache = [
        {n: put(layer[n], new_layer[n], CACHE_LENGTH_AXIS[n]) for n in layer}
        for layer, new_layer in zip(cache, new_cache)
    ]
    return self.pinned(cache, seen.at[slots_N].set(new_seen))

  def resize(self, cache, size):
    """The cache cut or zero-padded to `size` positions."""

    def fit(x, axis):
      if size <= x.shape[axis]:
        return jax.lax.slice_in_dim(x, 0, size, axis=axis)
      return _zero_padded(x, size, axis)

    return self.pinned(
        [{n: fit(x, CACHE_LENGTH_AXIS[n]) for n, x in layer.items()} for layer in cache]
    )

  def decode(
      self, params, cache, seen, tokens_B, lengths_B, busy_B, sampling, seeds_B, counts_B, room_B
  ):
    """`decode_steps` steps; row b takes at most room_B[b] tokens and none after an EOS. The new
    tokens come back [steps, slots], -1 where a row took none."""
    eos = jnp.asarray(sorted(self.eos_ids) or [-1], jnp.int32)

    def step(i, state):
      cache, seen, tokens_B, lengths_B, counts_B, room_B, out = state
      active = busy_B & (room_B > 0)
      cache, seen, next_B = self.step(
          params, cache, seen, tokens_B, lengths_B, active, sampling, seeds_B, counts_B
      )
      grow = active.astype(jnp.int32)
      room_B = jnp.where(active & ~jnp.isin(next_B, eos), room_B - 1, 0)
      return (
          cache,
          seen,
          jnp.where(active, next_B, tokens_B),
          lengths_B + grow,
          counts_B + grow,
          room_B,
          out.at[i].set(jnp.where(active, next_B, -1)),
      )

    out = jnp.full((self.decode_steps, self.slots), -1, jnp.int32)
    state = (cache, seen, tokens_B, lengths_B, counts_B, room_B, out)
    if self.decode_steps == 1:
      state = step(0, state)
    else:
      state = jax.lax.fori_loop(0, self.decode_steps, step, state)
    return (*self.pinned(state[0], state[1]), state[-1])

  def step(self, params, cache, seen, tokens_B, lengths_B, busy_B, sampling, seeds_B, counts_B):
    """One decode step for the busy rows: their next tokens, cached and marked seen."""
    keys = jax.vmap(lambda s, c: jax.random.fold_in(jax.random.key(s), c))(seeds_B, counts_B)
    S = cache_length(cache)
    kv_positions = jnp.broadcast_to(jnp.arange(S), (self.slots, S))
    kv_valid = ((kv_positions <= lengths_B[:, None]) & busy_B[:, None]).astype(jnp.int32)
    logits, cache = self.apply(
        params,
        tokens_B[:, None],
        lengths_B[:, None],
        busy_B[:, None].astype(jnp.int32),
        cache,
        lengths_B,
        kv_positions,
        kv_valid,
    )
    next_B = sample_tokens(logits[:, 0], keys, *sampling, seen)
    seen = seen.at[jnp.arange(self.slots), next_B].max(busy_B)
    return (*self.pinned(cache, seen), next_B)

  def verify(
      self,
      params,
      cache,
      seen,
      tokens_BxT,
      lengths_B,
      busy_B,
      draft_len_B,
      sampling,
      seeds_B,
      counts_B,
  ):
    """One pass over each slot's newest token and its draft (tokens_BxT[:, 1:], of which the
    first draft_len_B count). Returns the token each position gives (the draft's own where it
    is accepted) and how many draft tokens were kept."""
    B, T = tokens_BxT.shape
    # position t gives the row's token number counts_B + t, keyed as a plain step would be
    keys = jax.vmap(jax.vmap(lambda s, c: jax.random.fold_in(jax.random.key(s), c), (None, 0)))(
        seeds_B, counts_B[:, None] + jnp.arange(T)
    )
    positions = lengths_B[:, None] + jnp.arange(T)
    S = cache_length(cache)
    kv_positions = jnp.broadcast_to(jnp.arange(S), (B, S))
    kv_valid = ((kv_positions <= lengths_B[:, None] + T - 1) & busy_B[:, None]).astype(jnp.int32)
    rows = jnp.broadcast_to(busy_B[:, None], (B, T)).astype(jnp.int32)
    logits, cache = self.apply(
        params, tokens_BxT, positions, rows, cache, lengths_B, kv_positions, kv_valid
    )
    # Position t sees the draft's first t tokens as seen (repetition penalty).
    in_draft = jnp.arange(T - 1)[None] < draft_len_B[:, None]
    drafted = jax.nn.one_hot(tokens_BxT[:, 1:], self.cfg.V, dtype=jnp.int32)
    drafted = drafted * in_draft[..., None]
    seen_BxTxV = seen[:, None] | jnp.concatenate(
        [jnp.zeros_like(drafted[:, :1]), jnp.cumsum(drafted, axis=1)], axis=1
    ).astype(bool)
    draft_BxT = jnp.concatenate(
        [jnp.where(in_draft, tokens_BxT[:, 1:], -1), jnp.full((B, 1), -1, tokens_BxT.dtype)], axis=1
    )
    flat = lambda x: jnp.repeat(x, T, axis=0)  # a row's setting for each of its positions
    next_BxT = sample_tokens(
        logits.reshape(B * T, -1),
        keys.reshape(B * T),
        *(flat(x) for x in sampling),
        seen_BxTxV.reshape(B * T, -1),
        draft_BxT.reshape(B * T),
    ).reshape(B, T)
    match = (tokens_BxT[:, 1:] == next_BxT[:, :-1]) & in_draft
    kept_B = jnp.sum(jnp.cumprod(match.astype(jnp.int32), axis=1), axis=1)
    emitted = (jnp.arange(T)[None] <= kept_B[:, None]) & busy_B[:, None]
    seen = seen | jnp.any(
        jax.nn.one_hot(next_BxT, self.cfg.V, dtype=bool) & emitted[..., None], axis=1
    )
    return (*self.pinned(cache, seen), next_BxT, kept_B)


_prefill = jax.jit(_Device.prefill, static_argnums=0)
_insert = jax.jit(_Device.insert, static_argnums=0, donate_argnums=(1, 2))
_resize = jax.jit(_Device.resize, static_argnums=(0, 2))
_decode = jax.jit(_Device.decode, static_argnums=0, donate_argnums=(2, 3))
_verify = jax.jit(_Device.verify, static_argnums=0, donate_argnums=(2, 3))


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
  ):
    if cfg.scan_layers:
      raise UserError("generation needs unstacked layers (convert without --scan_layers)")
    self.cfg, self.slots, self.max_len, self.cache_step = cfg, slots, max_len, cache_step
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
    full = jax.eval_shape(lambda: init_cache(cfg, slots, max_len))
    kv_sharding = {
        n: sharding.named(self.mesh, self.rules, CACHE_AXES[n], full[0][n].shape)
        for n in CACHE_AXES
    }
    # The cache's dtype (None: the model's compute dtype) is the prefill's too.
    self.cache = jax.device_put(
        init_cache(cfg, slots, self._size(1), cache_dtype), [kv_sharding] * cfg.L
    )
    seen_sharding = sharding.named(self.mesh, self.rules, ("batch", "vocab"), (slots, cfg.V))
    self.seen = jax.device_put(jnp.zeros((slots, cfg.V), bool), seen_sharding)
    # Every step returns the cache and `seen` sharded as they came in: left to the compiler,
    # the first step returned the cache unsplit (P()), and the next call compiled again.
    self._device = _Device(
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
        for program in (_prefill, _insert, _resize, _decode, _verify)
    )
    self.draft_tokens, self.ngram = draft_tokens, ngram
    # prefill and decode passes, the tokens decoding added to outputs, draft tokens proposed
    # and kept, cache resizes
    self.stats = {
        "prefills": 0,
        "passes": 0,
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
    """The cache length that holds `need` positions: a multiple of the step, or max_len."""
    return min(self.max_len, -(-max(need, 1) // self.cache_step) * self.cache_step)

  def _fit_cache(self, need: int, shrink: bool) -> None:
    """Grow the cache to hold `need` positions; with `shrink`, also cut it when it is at least
    two steps too long (one step of slack, so a prompt's padding does not make it shrink
    and grow again around every refill)."""
    size, now = self._size(need), cache_length(self.cache)
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
          jax.device_put(init_cache(self.cfg, 1, W, self._device.cache_dtype), on_mesh),
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
                  n: jax.lax.slice_in_dim(x[:1], 0, W, axis=CACHE_LENGTH_AXIS[n])
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
    pending = enumerate(requests)
    live: Dict[int, Request] = {}
    results: Dict[int, Result] = {}
    waiting: List[int] = []  # requests read but not started, oldest first

    def read_ahead():
      while len(waiting) < LOOKAHEAD * self.prefill_batch:
        i, r = next(pending, (None, None))
        if r is None:
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
        live[i] = r
        waiting.append(i)

    owner = [-1] * self.slots
    lengths = np.zeros(self.slots, np.int32)  # tokens in each slot's cache
    last = np.zeros(self.slots, np.int32)  # each slot's newest token (not yet cached)
    out: List[List[int]] = [[] for _ in range(self.slots)]

    def need(extra):
      """Cache positions the busy slots need for a pass adding `extra` tokens to each."""
      return max([int(lengths[s]) + extra for s in range(self.slots) if owner[s] >= 0] + [0])

    def sampling_arrays(slot_requests):
      fields = ("temperature", "top_k", "top_p", "repetition_penalty")
      dtypes = (np.float32, np.int32, np.float32, np.float32)
      return tuple(
          jnp.asarray([getattr(live[i].sampling, f) if i >= 0 else d(0) for i in slot_requests], d)
          for f, d in zip(fields, dtypes)
      )

    def finish_reason(slot):
      req = live[owner[slot]]
      if out[slot][-1] in self.eos_ids:
        return "eos"
      if req.stop and any(s in self.decode_text(out[slot]) for s in req.stop):
        return "stop"
      if len(out[slot]) >= req.sampling.max_new_tokens:
        return "length"
      if lengths[slot] + 1 >= self.max_len:
        return "context"
      return None

    def retire(slot):
      """Report the slot's request and free the slot, if the request has ended."""
      reason = finish_reason(slot) if owner[slot] >= 0 else None
      if reason is None:
        return
      del live[owner[slot]]
      if on_result:
        on_result(owner[slot], Result(out[slot], reason))
      else:
        results[owner[slot]] = Result(out[slot], reason)
      owner[slot] = -1

    def next_batch(n):
      """The oldest waiting request and the n - 1 others nearest its length (oldest first
      among equals), so little of a batch's bucket is padding."""
      head = len(live[waiting[0]].prompt)
      batch = [waiting[0]] + sorted(waiting[1:], key=lambda i: abs(len(live[i].prompt) - head))[
          : n - 1
      ]
      for i in batch:
        waiting.remove(i)
      return batch

    def prefill(batch, slots):
      """Prefill the requests into the slots, one device call for the whole batch."""
      rows = batch + batch[:1] * (self.prefill_batch - len(batch))
      A = self._prefix_length([live[i].prompt for i in rows])
      prompts = [live[i].prompt[A:] for i in rows]
      tokens = np.zeros((len(rows), self._bucket(max(map(len, prompts)))), np.int32)
      for r, p in enumerate(prompts):
        tokens[r, : len(p)] = p
      seeds = np.asarray([live[i].sampling.seed for i in rows], np.uint32)
      new_cache, new_seen, first = self._on_mesh(
          self._prefill,
          self.params,
          (*self._stored_prefix(), jnp.int32(A)) if A else None,
          jnp.asarray(tokens),
          jnp.asarray(list(map(len, prompts)), jnp.int32),
          sampling_arrays(rows),
          jnp.asarray(seeds),
      )
      self.stats["prefills"] += 1
      self.stats["from_prefix"] += len(batch) if A else 0
      self._fit_cache(
          max(need(1), (self._prefix_width if A else 0) + tokens.shape[1]), shrink=False
      )
      targets = slots + slots[:1] * (len(rows) - len(slots))  # a repeat writes its slot again
      self.cache, self.seen = self._on_mesh(
          self._insert, self.cache, self.seen, jnp.asarray(targets, jnp.int32), new_cache, new_seen
      )
      for slot, i, token in zip(slots, batch, np.asarray(first)):
        owner[slot], lengths[slot] = i, len(live[i].prompt)
        last[slot] = int(token)
        out[slot] = [int(token)]

    def retire_and_refill():
      """Free every ended slot; start waiting requests a prefill batch at a time while a whole
      batch fits the free slots, or all that are left do."""
      while True:
        for slot in range(self.slots):
          retire(slot)
        read_ahead()
        free = [s for s in range(self.slots) if owner[s] < 0]
        n = min(self.prefill_batch, len(waiting))
        if n == 0 or len(free) < n:
          return
        prefill(next_batch(n), free[:n])

    def drafts(busy):
      """[slots, draft_tokens] proposals and their lengths, or None when a pass over them would
      run past a busy slot's cache (then this step decodes plainly)."""
      k = self.draft_tokens
      if not k or any(lengths[s] + k + 1 > self.max_len for s in np.flatnonzero(busy)):
        return None
      tokens, counts = np.zeros((self.slots, k), np.int32), np.zeros(self.slots, np.int32)
      for s in np.flatnonzero(busy):
        d = self._draft(list(live[owner[s]].prompt) + out[s], k)
        tokens[s, : len(d)], counts[s] = d, len(d)
      return (tokens, counts) if counts.any() else None

    retire_and_refill()
    while any(o >= 0 for o in owner):
      busy = np.asarray([o >= 0 for o in owner])
      seeds = np.asarray([live[o].sampling.seed if o >= 0 else 0 for o in owner], np.uint32)
      counts = np.asarray([len(x) for x in out], np.int32)  # token index the key is for
      proposal = drafts(busy)
      self._fit_cache(
          need(self.decode_steps if proposal is None else self.draft_tokens + 1), shrink=True
      )
      if proposal is None:
        # tokens each row may still take: its last one ends it by length or by a full cache
        room = np.asarray(
            [
                min(live[o].sampling.max_new_tokens - len(out[s]), self.max_len - 1 - lengths[s])
                if o >= 0
                else 0
                for s, o in enumerate(owner)
            ],
            np.int32,
        )
        self.cache, self.seen, steps_NxB = self._on_mesh(
            self._decode,
            self.params,
            self.cache,
            self.seen,
            jnp.asarray(last),
            jnp.asarray(lengths),
            jnp.asarray(busy),
            sampling_arrays(owner),
            jnp.asarray(seeds),
            jnp.asarray(counts),
            jnp.asarray(room),
        )
        steps_NxB = np.asarray(steps_NxB)
        new = [[int(t) for t in steps_NxB[:, s] if t >= 0] for s in range(self.slots)]
      else:
        tokens = np.concatenate([last[:, None], proposal[0]], axis=1)
        self.cache, self.seen, next_BxT, kept = self._on_mesh(
            self._verify,
            self.params,
            self.cache,
            self.seen,
            jnp.asarray(tokens),
            jnp.asarray(lengths),
            jnp.asarray(busy),
            jnp.asarray(proposal[1]),
            sampling_arrays(owner),
            jnp.asarray(seeds),
            jnp.asarray(counts),
        )
        next_BxT, kept = np.asarray(next_BxT), np.asarray(kept)
        new = [[int(t) for t in next_BxT[s, : kept[s] + 1]] for s in range(self.slots)]
        self.stats["drafted"] += int(proposal[1].sum())
        self.stats["accepted"] += int(kept[busy].sum())
      self.stats["passes"] += 1
      for slot in np.flatnonzero(busy):
        for token in new[slot]:  # one token at a time, so every stop rule sees each
          self.stats["tokens"] += 1
          lengths[slot] += 1
          last[slot] = token
          out[slot].append(token)
          if finish_reason(slot):
            break
      retire_and_refill()
    return None if on_result else [results[i] for i in range(len(results))]
