"""Hugging Face checkpoint directories (config.json + safetensors, single or sharded)."""

import json
import os
from typing import Dict

import numpy as np

from synthjax import storage
from synthjax.checkpoints import layout
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


def _rope_settings(hf: dict) -> dict:
  # transformers 5 nests rope settings in `rope_parameters`; 4.x kept them at the top level.
  rope = dict(hf.get("rope_parameters") or {})
  scaling = hf.get("rope_scaling") or {}
  theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
  kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
  out = {"rope_theta": float(theta)}
  if kind == "llama3":
    src = rope if "factor" in rope else scaling
    out.update(
        rope_scaling_factor=float(src["factor"]),
        rope_low_freq_factor=float(src["low_freq_factor"]),
        rope_high_freq_factor=float(src["high_freq_factor"]),
        rope_original_max_len=int(src["original_max_position_embeddings"]),
    )
  elif kind != "default":
    raise UserError(f"rope scaling type {kind!r} is not supported (only default and llama3)")
  return out


def config_from_hf(hf: dict, source: str = "config.json", name: str = "hf") -> ModelConfig:
  archs = hf.get("architectures") or [hf.get("model_type", "?")]
  if archs[0] not in SUPPORTED:
    raise UserError(
        f"{source}: unknown architecture {archs[0]!r} (supported: {', '.join(SUPPORTED)})"
    )
  window = hf.get("sliding_window")
  if (
      window
      and hf.get("use_sliding_window", archs[0] == "MistralForCausalLM")
      and (window < hf.get("max_position_embeddings", 0))
  ):
    raise UserError(
        f"{source}: sliding-window attention (sliding_window={window}) is not supported"
    )
  try:
    H = hf["num_attention_heads"]
    D = hf["hidden_size"]
    return ModelConfig(
        name=name,
        V=hf["vocab_size"],
        D=D,
        L=hf["num_hidden_layers"],
        H=H,
        K=hf.get("num_key_value_heads") or H,
        Dh=hf.get("head_dim") or D // H,
        F=hf["intermediate_size"],
        max_len=hf.get("max_position_embeddings", 2048),
        rms_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=hf.get("tie_word_embeddings", False),
        qkv_bias=archs[0] == "Qwen2ForCausalLM" or bool(hf.get("attention_bias", False)),
        **_rope_settings(hf),
    )
  except KeyError as e:
    raise UserError(f"{source}: missing field {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    raise UserError(f"{source}: {e}") from None


def config_to_hf(cfg: ModelConfig) -> dict:
  rope = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
  if cfg.rope_scaling_factor is not None:
    rope.update(
        rope_type="llama3",
        factor=cfg.rope_scaling_factor,
        low_freq_factor=cfg.rope_low_freq_factor,
        high_freq_factor=cfg.rope_high_freq_factor,
        original_max_position_embeddings=cfg.rope_original_max_len,
    )
  return {
      "architectures": ["Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"],
      "model_type": "qwen2" if cfg.qkv_bias else "llama",
      "vocab_size": cfg.V,
      "hidden_size": cfg.D,
      "num_hidden_layers": cfg.L,
      "num_attention_heads": cfg.H,
      "num_key_value_heads": cfg.K,
      "head_dim": cfg.Dh,
      "intermediate_size": cfg.F,
      "max_position_embeddings": cfg.max_len,
      "rms_norm_eps": cfg.rms_eps,
      "tie_word_embeddings": cfg.tie_embeddings,
      "hidden_act": "silu",
      "rope_parameters": rope,
      "rope_theta": cfg.rope_theta,
      "torch_dtype": cfg.param_dtype,
  }


def _safetensor_files(model_dir: str) -> list:
  index = os.path.join(model_dir, "model.safetensors.index.json")
  if os.path.exists(index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise UserError(f"{index}: not a safetensors index ({e})") from None
    files = sorted(set(weight_map.values()))
    for f in files:
      if not os.path.exists(os.path.join(model_dir, f)):
        raise UserError(f"{index}: shard {f!r} is missing")
    return [os.path.join(model_dir, f) for f in files]
  single = os.path.join(model_dir, "model.safetensors")
  if not os.path.exists(single):
    raise UserError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
  return [single]


def read_tensors(model_dir: str) -> Dict[str, np.ndarray]:
  """All tensors of the checkpoint as numpy (bf16 kept as ml_dtypes bfloat16)."""
  from safetensors import safe_open

  tensors = {}
  for path in _safetensor_files(model_dir):
    try:
      with safe_open(path, framework="numpy") as f:
        for name in f.keys():
          tensors[name] = f.get_tensor(name)
    except Exception as e:  # safetensors raises its own error types for broken files
      raise UserError(f"{path}: unreadable safetensors file ({_short(e)})") from None
  return tensors


def _short(e: Exception) -> str:
  return str(e).splitlines()[0] if str(e) else type(e).__name__


def load(model_dir: str):
  """(ModelConfig, params) from a HF directory, every tensor and shape checked."""
  config_path = os.path.join(model_dir, "config.json")
  if not os.path.exists(config_path):
    raise UserError(f"{model_dir}: no config.json")
  try:
    with open(config_path) as f:
      hf = json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f"{config_path}: invalid JSON ({e})") from None
  cfg = config_from_hf(hf, config_path, name=os.path.basename(os.path.normpath(model_dir)))
  tensors = read_tensors(model_dir)
  layout.check_tensors(cfg, {k: v.shape for k, v in tensors.items()}, model_dir)
  if all(str(t.dtype) == "bfloat16" for t in tensors.values()):
    # kept as stored: lossless, and half the memory of an f32 copy (an 8B model: 16 GB, not
    # 32); computation stays in the config's dtype unless the generation job asks otherwise
    cfg = cfg.replace(param_dtype="bfloat16")
  return cfg, layout.params_from_hf(cfg, tensors.__getitem__)


def save(cfg: ModelConfig, params: dict, out_dir: str, overwrite: bool = False) -> None:
  """Export to a HF directory that transformers' from_pretrained reads."""
  from safetensors.numpy import save_file

  with storage.atomic_folder(out_dir, overwrite=overwrite) as tmp:
    tensors = {k: np.asarray(v, np.float32) for k, v in layout.params_to_hf(cfg, params).items()}
    save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(config_to_hf(cfg), f, indent=2)
