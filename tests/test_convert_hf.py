import json
import os

import jax
import numpy as np
import pytest

from synthjax import convert
from synthjax.checkpoints import store
from synthjax.models.llama import Transformer
from tests.hf_fixtures import save_tiny_hf

LENGTHS = [11, 7, 3]


def _padded_batch(vocab):
  rng = np.random.default_rng(0)
  tokens = np.zeros((len(LENGTHS), max(LENGTHS)), np.int64)
  mask = np.zeros_like(tokens)
  for i, n in enumerate(LENGTHS):
    tokens[i, :n] = rng.integers(0, vocab, n)
    mask[i, :n] = 1
  return tokens, mask


def _jax_logits(model_dir, tokens, mask):
  cfg = store.load_config(model_dir)
  params = store.load_params(model_dir, cfg)
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  return cfg, np.asarray(
      Transformer(cfg).apply({"params": params}, tokens, positions, mask.astype(np.int32))
  )


def _torch_logits(torch, hf_dir, tokens, mask):
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits
  return out.numpy()


@pytest.mark.parametrize(
    "kind,overrides",
    [
        ("llama", {}),
        (
            "llama",
            {
                "tie_word_embeddings": True,
                "rope_parameters": {
                    "rope_type": "llama3",
                    "rope_theta": 500000.0,
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 32,
                },
            },
        ),
        ("qwen2", {}),
    ],
)
def test_converted_logits_match_transformers(torch_module, tmp_path, kind, overrides):
  hf_dir = save_tiny_hf(torch_module, kind, str(tmp_path), **overrides)
  out = str(tmp_path / "converted")
  convert.main(["--hf_dir", hf_dir, "--out", out])
  tokens, mask = _padded_batch(211)
  cfg, ours = _jax_logits(out, tokens, mask)
  theirs = _torch_logits(torch_module, hf_dir, tokens, mask)
  assert cfg.qkv_bias == (kind == "qwen2")
  valid = mask.astype(bool)
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=0)
  # Export back to HF and load with transformers: the same logits again.
  exported = str(tmp_path / "exported")
  convert.main(["--export_hf", out, "--out", exported])
  again = _torch_logits(torch_module, exported, tokens, mask)
  np.testing.assert_allclose(again[valid], theirs[valid], atol=1e-4, rtol=0)


def test_sharded_safetensors_with_index(torch_module, tmp_path):
  hf_dir = save_tiny_hf(torch_module, "llama", str(tmp_path))
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
  sharded = str(tmp_path / "sharded")
  model.save_pretrained(sharded, max_shard_size="50KB")
  assert os.path.exists(os.path.join(sharded, "model.safetensors.index.json"))
  with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
    assert len(set(json.load(f)["weight_map"].values())) > 1
  out = str(tmp_path / "converted")
  convert.main(["--hf_dir", sharded, "--out", out, "--scan_layers"])
  tokens, mask = _padded_batch(211)
  cfg, ours = _jax_logits(out, tokens, mask)
  assert cfg.scan_layers
  theirs = _torch_logits(torch_module, hf_dir, tokens, mask)
  valid = mask.astype(bool)
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=0)


def test_bf16_checkpoint_stays_bf16(torch_module, tmp_path):
  """A bf16 source is stored in bf16 (lossless, half the memory), computes in f32, and gives
  transformers' logits for those bf16 weights."""
  import transformers

  hf_dir = save_tiny_hf(torch_module, "llama", str(tmp_path))
  bf16_dir = str(tmp_path / "bf16")
  transformers.AutoModelForCausalLM.from_pretrained(
      hf_dir, dtype=torch_module.bfloat16
  ).save_pretrained(bf16_dir)
  out = str(tmp_path / "converted")
  convert.main(["--hf_dir", bf16_dir, "--out", out])
  tokens, mask = _padded_batch(211)
  cfg, ours = _jax_logits(out, tokens, mask)
  assert cfg.param_dtype == "bfloat16" and cfg.dtype == "float32"
  params = store.load_params(out, cfg)
  assert {str(x.dtype) for x in jax.tree.leaves(params)} == {"bfloat16"}
  theirs = _torch_logits(torch_module, bf16_dir, tokens, mask)  # bf16 weights, f32 compute
  valid = mask.astype(bool)
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=0)
