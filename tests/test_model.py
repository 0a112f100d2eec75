import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax.models import flops, kv_cache
from synthjax.models.config import ModelConfig
from synthjax.models.llama import Transformer, rope_frequencies

CFG = ModelConfig(V=97, D=32, L=2, H=4, K=2, Dh=8, F=48)


def _init(cfg, tokens):
  return nn.unbox(Transformer(cfg).init(jax.random.key(0), tokens))


def test_logits_shape_and_param_count():
  tokens = jnp.zeros((2, 5), jnp.int32)
  for tie in (False, True):
    cfg = CFG.replace(tie_embeddings=tie, qkv_bias=tie)
    params = _init(cfg, tokens)
    assert Transformer(cfg).apply(params, tokens).shape == (2, 5, cfg.V)
    n = sum(x.size for x in jax.tree.leaves(params))
    assert n == flops.param_count(cfg)


def test_causal_future_tokens_do_not_change_past_logits():
  rng = np.random.default_rng(0)
  a = rng.integers(0, CFG.V, (1, 10))
  b = a.copy()
  b[0, 6:] = (b[0, 6:] + 1) % CFG.V
  params = _init(CFG, a)
  la = Transformer(CFG).apply(params, a)
  lb = Transformer(CFG).apply(params, b)
  np.testing.assert_allclose(la[0, :6], lb[0, :6], atol=1e-6)
  assert np.abs(la[0, 6:] - lb[0, 6:]).max() > 1e-3


def test_packed_segments_equal_separate_sequences():
  rng = np.random.default_rng(1)
  x, y = rng.integers(0, CFG.V, 6), rng.integers(0, CFG.V, 4)
  packed = np.concatenate([x, y])[None]
  positions = np.concatenate([np.arange(6), np.arange(4)])[None]
  segments = np.array([[1] * 6 + [2] * 4])
  params = _init(CFG, packed)
  model = Transformer(CFG)
  out = model.apply(params, packed, positions, segments)
  np.testing.assert_allclose(out[0, :6], model.apply(params, x[None])[0], atol=1e-5)
  np.testing.assert_allclose(out[0, 6:], model.apply(params, y[None])[0], atol=1e-5)


def test_scan_and_remat_match_unrolled_layers():
  from synthjax.checkpoints import layout

  tokens = np.random.default_rng(2).integers(0, CFG.V, (2, 7))
  params = _init(CFG, tokens)["params"]
  scanned_cfg = CFG.replace(scan_layers=True, remat="full")
  layers = [params[f"layers_{i}"] for i in range(CFG.L)]
  scanned = {k: v for k, v in params.items() if not k.startswith("layers_")}
  scanned.update(layout.stack_layers(scanned_cfg, layers))
  ref = Transformer(CFG).apply({"params": params}, tokens)
  out = Transformer(scanned_cfg).apply({"params": scanned}, tokens)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  grad = jax.grad(lambda p: Transformer(scanned_cfg).apply({"params": p}, tokens).sum())(scanned)
  assert np.isfinite(jax.tree.leaves(grad)[0]).all()


def test_kv_cache_decoding_equals_full_forward():
  tokens = np.random.default_rng(3).integers(0, CFG.V, (2, 9))
  params = _init(CFG, tokens)
  model = Transformer(CFG)
  full = model.apply(params, tokens)
  cache = kv_cache.init(CFG, 2, 16)
  S = 16
  kv_pos = np.broadcast_to(np.arange(S), (2, S))
  steps = []
  for t in range(9):
    kv_seg = (np.arange(S) <= t).astype(np.int32)[None].repeat(2, 0)
    logits, cache = model.apply(
        params,
        tokens[:, t : t + 1],
        np.full((2, 1), t),
        np.ones((2, 1), np.int32),
        cache,
        np.full((2,), t),
        kv_pos,
        kv_seg,
    )
    steps.append(logits[:, 0])
  np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("name", ["k", "v"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("T", [1, 3])
def test_cache_write_puts_each_rows_entries_at_its_offset(name, dtype, T):
  # A bf16 decode step writes with a select, the other cases with a scatter: same result, in
  # the dense keys' layout (BxKxDhxS) and the values' (BxKxSxDh).
  rng = np.random.default_rng(0)
  B, K, S, Dh = 3, 2, 10, 4
  cache = rng.normal(size=(B, K, S, Dh)).astype(np.float32)
  new = rng.normal(size=(B, T, K, Dh)).astype(np.float32)
  starts = np.array([0, 4, S - T])
  expected = cache.copy()
  for b in range(B):
    expected[b, :, starts[b] : starts[b] + T] = new[b].swapaxes(0, 1)
  layout = (lambda x: x.swapaxes(2, 3)) if name == "k" else (lambda x: x)
  got = kv_cache.write(
      jnp.asarray(layout(cache), dtype),
      jnp.asarray(new, dtype),
      jnp.asarray(starts),
      kv_cache.length_axis(CFG)[name],
  )
  assert got.dtype == jnp.dtype(dtype)
  np.testing.assert_array_equal(
      np.asarray(layout(got), np.float32), np.asarray(jnp.asarray(expected, dtype), np.float32)
  )


def test_kv_cache_decoding_equals_full_forward_in_the_ragged_layout():
  # Keys laid out as the values are, and a decode step (T = 1) attends through the GPU kernel
  # (interpreted here); rows of different lengths, one of them idle at each step.
  cfg = CFG.replace(decode_attention="ragged")
  tokens = np.random.default_rng(3).integers(0, CFG.V, (3, 9))
  params = _init(CFG, tokens)
  full = Transformer(CFG).apply(params, tokens)
  model = Transformer(cfg)
  cache = kv_cache.init(cfg, 3, 32)
  assert cache[0]["k"].shape == cache[0]["v"].shape == (3, CFG.K, 32, CFG.Dh)
  S, starts = 32, np.array([0, 2, 5])  # row b starts decoding at step starts[b]
  kv_pos = np.broadcast_to(np.arange(S), (3, S))
  steps = np.zeros_like(full)
  for step in range(14):
    t = np.clip(step - starts, 0, 8)
    busy = (step >= starts) & (step - starts <= 8)
    kv_valid = ((np.arange(S)[None] <= t[:, None]) & busy[:, None]).astype(np.int32)
    logits, cache = model.apply(
        params,
        tokens[np.arange(3), t][:, None],
        t[:, None],
        busy[:, None].astype(np.int32),
        cache,
        t,
        kv_pos,
        kv_valid,
    )
    for b in np.flatnonzero(busy):
      steps[b, t[b]] = logits[b, 0]
  np.testing.assert_allclose(steps, full, atol=1e-5)


def test_llama3_rope_scaling_keeps_high_frequencies():
  base = CFG.replace(Dh=64, rope_theta=500000.0)
  scaled = base.replace(rope_scaling_factor=8.0, rope_original_max_len=8192)
  f0, f1 = np.asarray(rope_frequencies(base)), np.asarray(rope_frequencies(scaled))
  assert f1[0] == pytest.approx(f0[0])  # shortest wavelength untouched
  assert f1[-1] == pytest.approx(f0[-1] / 8.0)  # longest wavelength slowed by the factor


def test_bad_config_is_rejected():
  with pytest.raises(ValueError, match="multiple"):
    ModelConfig(H=6, K=4)
  with pytest.raises(ValueError, match="dtype"):
    ModelConfig(dtype="int8")


def test_flops_per_token_counts_matmuls_and_attention():
  cfg = ModelConfig(V=100, D=8, L=1, H=2, K=2, Dh=4, F=16, tie_embeddings=True)
  layer = 8 * 8 + 2 * 8 * 8 + 8 * 8 + 3 * 8 * 16 + 2 * 8
  assert flops.param_count(cfg) == 100 * 8 + layer + 8
  assert flops.train_flops_per_token(cfg, 10) == 6 * (layer + 8 + 800) + 12 * 1 * 2 * 4 * 10
