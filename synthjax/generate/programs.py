"""An engine's device programs: prefill, insert into slots, resize the cache, decode and verify
drafts. They are jitted at module level with their settings (`DevicePrograms`) as a static
argument, so engines that agree on the settings share traces and compiled programs."""

import dataclasses
from typing import Any, Tuple

import jax
import jax.numpy as jnp

from synthjax.generate.sampling import sample_tokens
from synthjax.models import kv_cache
from synthjax.models.config import ModelConfig
from synthjax.models.llama import Transformer


def _zero_padded(x, size: int, axis: int):
  """x with zeros appended along `axis` up to `size`."""
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths)


@dataclasses.dataclass(frozen=True)
class DevicePrograms:
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
      new_cache = kv_cache.init(self.cfg, N, P_len, self.cache_dtype)
    else:
      prefix_cache, prefix_ids_W, A = prefix
      W = len(prefix_ids_W)
      new_cache = [
          {
              n: _zero_padded(
                  jnp.broadcast_to(x, (N, *x.shape[1:])),
                  W + P_len,
                  kv_cache.length_axis(self.cfg)[n],
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
    S = kv_cache.length(cache)
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

    axis = kv_cache.length_axis(self.cfg)
    cache = [
        {n: put(layer[n], new_layer[n], axis[n]) for n in layer}
        for layer, new_layer in zip(cache, new_cache)
    ]
    return self.pinned(cache, seen.at[slots_N].set(new_seen))

  def resize(self, cache, size):
    """The cache cut or zero-padded to `size` positions."""

    def fit(x, axis):
      if size <= x.shape[axis]:
        return jax.lax.slice_in_dim(x, 0, size, axis=axis)
      return _zero_padded(x, size, axis)

    axis = kv_cache.length_axis(self.cfg)
    return self.pinned([{n: fit(x, axis[n]) for n, x in layer.items()} for layer in cache])

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
    S = kv_cache.length(cache)
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
    S = kv_cache.length(cache)
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


prefill = jax.jit(DevicePrograms.prefill, static_argnums=0)
insert = jax.jit(DevicePrograms.insert, static_argnums=0, donate_argnums=(1, 2))
resize = jax.jit(DevicePrograms.resize, static_argnums=(0, 2))
decode = jax.jit(DevicePrograms.decode, static_argnums=0, donate_argnums=(2, 3))
verify = jax.jit(DevicePrograms.verify, static_argnums=0, donate_argnums=(2, 3))
