"""The attention forms agree with the materialized reference on packed, padded batches, forward
and gradient, and the blocked form never holds a T x T score matrix."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax.models import attention
from synthjax.models.config import ModelConfig
from synthjax.models.llama import Transformer

TOL = 2e-5  # f32: the forms differ only in the order of their sums


def _packed_batch(T, H=4, K=2, Dh=16, seed=0):
  """Row 0: two documents then padding; row 1: one document filling the row."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(2, T, H, Dh)).astype(np.float32)
  k, v = (rng.normal(size=(2, T, K, Dh)).astype(np.float32) for _ in range(2))
  a, b = T // 2 - 3, T - 5
  segments = np.zeros((2, T), np.int32)
  positions = np.zeros((2, T), np.int32)
  segments[0, :a], segments[0, a:b], segments[1] = 1, 2, 1
  positions[0, :a], positions[0, a:b], positions[1] = np.arange(a), np.arange(b - a), np.arange(T)
  return q, k, v, positions, segments


def _output_and_grads(form, batch, block):
  q, k, v, positions, segments = batch
  # Padding rows see nothing; their outputs carry no weight in the loss, as in training.
  weight = (segments != 0)[:, :, None, None].astype(np.float32)
  d_out = np.random.default_rng(9).normal(size=q.shape).astype(np.float32) * weight

  def loss(q, k, v):
    out = attention.self_attention(q, k, v, positions, segments, form, block)
    return jnp.sum(out * d_out), out * weight

  # f32 products in full (a GPU would otherwise round them through TF32)
  with jax.default_matmul_precision("highest"):
    (_, out), grads = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(q, k, v)
  return out, grads


@pytest.mark.parametrize("T,block", [(64, 16), (64, 64), (96, 64), (48, 512)])
def test_blocked_matches_xla(T, block):
  batch = _packed_batch(T)
  ref_out, ref_grads = _output_and_grads("xla", batch, block)
  out, grads = _output_and_grads("blocked", batch, block)
  np.testing.assert_allclose(out, ref_out, atol=TOL)
  for g, ref in zip(grads, ref_grads):
    np.testing.assert_allclose(g, ref, atol=TOL)


def test_splash_matches_xla():
  # On CPU Pallas interprets the TPU kernel: slow, but the same kernel code and masks.
  batch = _packed_batch(256, H=2, K=1, Dh=64)
  ref_out, ref_grads = _output_and_grads("xla", batch, 128)
  out, grads = _output_and_grads("splash", batch, 128)
  np.testing.assert_allclose(out, ref_out, atol=TOL)
  for g, ref in zip(grads, ref_grads):
    np.testing.assert_allclose(g, ref, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs a GPU")
def test_cudnn_matches_xla():
  batch = [
      jnp.asarray(x, jnp.bfloat16) if x.dtype == np.float32 else x
      for x in _packed_batch(128, Dh=64)
  ]
  ref_out, _ = _output_and_grads("xla", batch, 128)
  out, _ = _output_and_grads("cudnn", batch, 128)
  np.testing.assert_allclose(np.float32(out), np.float32(ref_out), atol=2e-2)


def _temp_bytes(form, T, H=4, Dh=16):
  shape_q = jax.ShapeDtypeStruct((1, T, H, Dh), jnp.float32)
  shape_kv = jax.ShapeDtypeStruct((1, T, H, Dh), jnp.float32)
  ids = jax.ShapeDtypeStruct((1, T), jnp.int32)

  def loss(q, k, v, positions, segments):
    return jnp.sum(attention.self_attention(q, k, v, positions, segments, form, 128))

  grad = jax.jit(jax.grad(loss, (0, 1, 2)))
  compiled = grad.lower(shape_q, shape_kv, shape_kv, ids, ids).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_blocked_never_holds_the_score_matrix():
  T, H = 2048, 4
  scores = T * T * H * 4  # one layer's f32 scores
  assert _temp_bytes("xla", T, H) >= scores
  assert _temp_bytes("blocked", T, H) < scores / 8


CFG = ModelConfig(V=97, D=32, L=2, H=4, K=2, Dh=8, F=48, attention_block=16)


@pytest.mark.parametrize(
    "changes",
    [
        dict(attention="blocked"),
        dict(remat="full"),
        dict(remat="save_dots"),
        dict(remat="save_attention"),
        dict(attention="blocked", remat="save_dots", scan_layers=True),
    ],
)
def test_model_forms_and_remat_give_the_same_logits_and_gradients(changes):
  from synthjax.checkpoints import layout

  _, _, _, positions, segments = _packed_batch(48)
  tokens = np.random.default_rng(3).integers(0, CFG.V, positions.shape)
  params = nn.unbox(Transformer(CFG).init(jax.random.key(0), tokens))["params"]
  cfg = CFG.replace(**changes)
  if cfg.scan_layers:
    layers = [params[f"layers_{i}"] for i in range(CFG.L)]
    other = {k: v for k, v in params.items() if not k.startswith("layers_")}
    other.update(layout.stack_layers(cfg, layers))
  else:
    other = params
  weight = (segments != 0)[..., None]
  probe = np.random.default_rng(4).normal(size=(*tokens.shape, CFG.V)) * weight

  def run(cfg, p):
    def loss(p):
      logits = Transformer(cfg).apply({"params": p}, tokens, positions, segments)
      return jnp.sum(logits * probe), logits * weight

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(p)

  (_, ref_logits), ref_grads = run(CFG, params)
  (_, logits), grads = run(cfg, other)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
  if cfg.scan_layers:
    grads = dict(
        grads,
        **{
            f"layers_{i}": jax.tree.map(lambda x, i=i: x[i], grads["layers"]["block"])
            for i in range(CFG.L)
        },
    )
    grads.pop("layers")
  for path, g in jax.tree_util.tree_leaves_with_path(ref_grads):
    other_g = grads
    for key in path:
      other_g = other_g[key.key]
    scale = float(np.abs(g).max()) + 1e-6
    np.testing.assert_allclose(other_g, g, atol=1e-5 * scale, rtol=1e-4, err_msg=str(path))


def test_auto_picks_the_fused_kernel_per_platform():
  assert attention.resolve("auto", "gpu") == "cudnn"
  assert attention.resolve("auto", "gpu", "float32") == "blocked"  # cuDNN takes no f32
  assert attention.resolve("auto", "tpu") == "splash"
  assert attention.resolve("auto", "cpu") == "xla"
  assert attention.resolve("blocked", "tpu") == "blocked"


def test_unknown_form_or_policy_is_one_clear_error():
  with pytest.raises(ValueError, match="ModelConfig.attention must be one of"):
    ModelConfig(attention="flash")
  with pytest.raises(ValueError, match="ModelConfig.remat must be one of"):
    ModelConfig(remat="some")
