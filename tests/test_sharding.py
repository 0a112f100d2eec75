import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from synthjax import sharding
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig
from synthjax.models.llama import Transformer

CFG = ModelConfig(V=128, D=32, L=2, H=4, K=2, Dh=8, F=64)


def test_mesh_fills_the_minus_one_axis():
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 1})
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
  with pytest.raises(UserError, match="not divisible"):
    sharding.make_mesh({"data": -1, "tensor": 3})
  with pytest.raises(UserError, match="needs 16 devices"):
    sharding.make_mesh({"data": 4, "tensor": 4})


def test_sharded_forward_equals_unsharded_and_params_are_sharded():
  assert jax.device_count() == 8
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = sharding.logical_axis_rules()
  model = Transformer(CFG)
  tokens = np.random.default_rng(0).integers(0, CFG.V, (4, 16))
  params, _ = sharding.init_sharded(lambda r: model.init(r, tokens), mesh, rules, jax.random.key(0))
  attn = params["params"]["layers_0"]["attn"]
  assert attn["q"].sharding.spec == P("fsdp", "tensor", None)
  assert attn["o"].sharding.spec == P("tensor", None, "fsdp")
  assert params["params"]["embed"].sharding.spec == P("tensor", "fsdp")
  assert params["params"]["layers_0"]["mlp"]["down"].sharding.spec == P("tensor", "fsdp")
  # Really split: each device holds a quarter of a (fsdp, tensor)-sharded kernel.
  gate = params["params"]["layers_0"]["mlp"]["gate"]
  assert {s.data.shape for s in gate.addressable_shards} == {(16, 32)}

  batch = jax.device_put(tokens, sharding.batch_sharding(mesh))
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sharded = jax.jit(model.apply)(params, batch)
  assert sharded.sharding.spec[0] == ("data", "fsdp")
  unsharded = model.apply(jax.device_get(params), tokens)
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(unsharded), atol=1e-5)


def test_global_batch_from_process_local_rows():
  mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
  local = {"tokens": np.arange(8 * 3).reshape(8, 3)}
  batch = sharding.global_batch(local, mesh)
  assert batch["tokens"].shape == (8, 3)
  np.testing.assert_array_equal(np.asarray(batch["tokens"]), local["tokens"])
  assert len(batch["tokens"].addressable_shards) == 8


def test_every_microbatch_takes_rows_from_every_device():
  import jax.numpy as jnp

  from synthjax.training.step import microbatches

  mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  rows = jnp.arange(32)  # 4 rows on each of the 8 data-parallel devices
  batch = jax.device_put(rows, sharding.batch_sharding(mesh))
  own = {s.device: set(np.asarray(s.data)) for s in batch.addressable_shards}
  micro = jax.jit(lambda x: microbatches(x, 2, mesh))(batch)
  assert micro.shape == (2, 16)
  for shard in micro.addressable_shards:  # each device keeps its own 4 rows, 2 per microbatch
    assert set(np.asarray(shard.data).ravel()) == own[shard.device]
    assert shard.data.shape == (2, 2)
  assert sorted(np.asarray(micro).ravel()) == list(range(32))


def test_a_mesh_across_slices_needs_that_many_slices():
  with pytest.raises(Exception, match=r"dcn_axes .* needs 2 slices, but the devices are in 1"):
    sharding.make_mesh({"data": -1, "fsdp": 2}, dcn_axes={"data": 2})
  with pytest.raises(Exception, match=r"dcn_axes .* 'tensor' is not an axis"):
    sharding.make_mesh({"data": -1, "fsdp": 2}, dcn_axes={"tensor": 2})
