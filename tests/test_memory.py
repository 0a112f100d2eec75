"""The memory check: every paper preset fits the slice the study names, a preset made too large
fails naming its cause, and the parameter and optimizer figures are the bytes a real sharded
train state holds per device."""

import jax
import pytest

from synthjax import gin_cli, grid, sharding
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig
from synthjax.study_config import StudyConfig
from synthjax.training import memory
from synthjax.training.optimizer import OptimizerConfig

V4 = memory.Slice(name="v4-64", devices=32, device_gib=32.0, platform="tpu")
PAPER_MESH = {"data": -1, "fsdp": 8, "tensor": 1}


def test_every_paper_preset_fits_its_slice():
  gin_cli.parse(["study/paper.gin"])
  cfg = StudyConfig()
  plans = grid.grid_memory(cfg, cfg.train_gin)
  assert sorted(plans) == sorted(cfg.model_sizes)
  for size, plan in plans.items():
    assert plan["verdict"] == "fits", grid.memory_line(size, plan)
    assert plan["slice"] == "v4-64" and plan["attention"] == "splash"
    assert plan["mesh"] == {"data": 4, "fsdp": 8, "tensor": 1}
    assert plan["rows_per_device"] == 8  # 512 rows over 32 devices, 2 microbatches
    assert 0 < plan["total_gib"] < 32 * 0.9


def _paper_3b(**changes):
  gin_cli.parse(["models/paper_3b.gin"], ["ModelConfig.dtype = 'bfloat16'"])
  return ModelConfig().replace(**changes)


def test_a_preset_made_too_large_fails_naming_the_cause():
  # Without remat, 3B's activations at 16 rows of 2,048 tokens per device fill no v4 chip.
  plan = memory.check(_paper_3b(remat="none"), OptimizerConfig(), 512, 2048, 1, PAPER_MESH, V4)
  assert plan["verdict"] == "too large"
  assert plan["reason"].startswith("paper_3b needs ")
  assert "the largest part is activations" in plan["reason"] and "remat" in plan["reason"]
  with pytest.raises(UserError, match="more than 90% of its 32 GiB"):
    memory.require_fit(plan)
  # A model ten times wider: its optimizer state alone is more than a chip.
  wide = _paper_3b(D=3072 * 4, F=8192 * 4, remat="full", name="paper_3b_x16")
  plan = memory.check(wide, OptimizerConfig(), 512, 2048, 2, PAPER_MESH, V4)
  assert plan["verdict"] == "too large"
  assert "the largest part is optimizer state" in plan["reason"]
  assert "more fsdp shards" in plan["reason"]


def test_remat_and_attention_order_the_activations():
  acts = {}
  for remat in ("none", "save_dots", "save_attention", "full"):
    plan = memory.check(_paper_3b(remat=remat), OptimizerConfig(), 512, 2048, 1, PAPER_MESH, V4)
    acts[remat] = plan["parts"]["activations"]
  assert acts["none"] > acts["save_dots"] > acts["save_attention"] > acts["full"] > 0
  xla, fused = (
      memory.check(
          _paper_3b(attention=form, remat="none"), OptimizerConfig(), 512, 2048, 1, PAPER_MESH, V4
      )
      for form in ("xla", "auto")
  )
  # materialized f32 scores and probabilities: 2,048 of each per head and token
  assert xla["parts"]["activations"] > 3 * fused["parts"]["activations"]


def test_parameter_and_optimizer_bytes_are_what_a_sharded_state_holds():
  from synthjax import train

  cfg = ModelConfig(V=256, D=64, L=2, H=4, K=2, Dh=16, F=128)
  opt = OptimizerConfig()
  for axes in ({"data": 1, "fsdp": 8, "tensor": 1}, {"data": 2, "fsdp": 2, "tensor": 2}):
    mesh = sharding.make_mesh(axes)
    rules = sharding.logical_axis_rules()
    _, _, init, _, _ = train.programs(cfg, opt, mesh, rules, 32, 1, 0.0)
    state = init(jax.random.key(0))
    device = jax.devices()[0]

    def on_device(tree, device=device):
      return sum(
          s.data.nbytes
          for leaf in jax.tree.leaves(tree)
          for s in leaf.addressable_shards
          if s.device == device
      )

    plan = memory.estimate(cfg, opt, 8, 32, 1, axes, "cpu")
    assert plan["parts"]["parameters"] == on_device(state["params"])
    # the optimizer's step counter is replicated: a few bytes beyond the moments
    moments = on_device(state["opt_state"])
    assert 0 <= moments - plan["parts"]["optimizer state"] <= 16


def test_train_dry_run_prints_the_estimate_and_refuses_a_job_that_cannot_fit(tmp_path):
  import json
  import subprocess
  import sys

  base = [
      sys.executable,
      "-m",
      "synthjax.train",
      "--gin_file=train/tiny_markov.gin",
      f"--gin.MODEL_DIR={tmp_path / 'run'}",
      "--gin.TRAIN_TOKENS=4096",
  ]
  out = subprocess.run(base + ["--dry_run"], capture_output=True, text=True, check=True)
  plan = json.loads(out.stdout.strip().splitlines()[-1])["memory"]
  assert plan["verdict"] == "unknown" and plan["parts"]["parameters"] > 0  # CPU: no limit
  tiny = subprocess.run(
      base + ["--gin.Slice.device_gib=0.0001", "--gin.Slice.name='a toy'"],
      capture_output=True,
      text=True,
  )
  assert tiny.returncode != 0
  assert "needs" in tiny.stderr and "GiB per device on a toy" in tiny.stderr
  assert not (tmp_path / "run").exists()  # refused before anything was written
