"""GGUF (llama.cpp) Llama-family files: dequantize, un-permute q/k, rebuild the tokenizer.

llama.cpp stores q and k rows permuted for its interleaved RoPE; synthjax (like HF) uses
rotate-half RoPE, so rows are put back in HF order here and the model keeps one RoPE.
"""

import os
import re
from typing import Dict

import numpy as np

from synthjax.checkpoints import layout
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig

# GGUF tensor name (after "blk.N.") -> HF name (after "model.layers.N.")
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# Pre-tokenizer regexes by GGUF `tokenizer.ggml.pre` (published patterns of those models).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SUPPORTED_PRE = ("default", "gpt2", "smollm", "llama-bpe")


def hf_name(gguf_name: str) -> str:
  if gguf_name in _TOP_NAMES:
    return _TOP_NAMES[gguf_name]
  m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
  if m and m.group(2) in _LAYER_NAMES:
    return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"
  return gguf_name  # left as is: check_tensors reports it as unexpected


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Undo llama.cpp's q/k row permutation (interleaved pairs -> rotate-half halves)."""
  rows = w.shape[0]
  half = rows // n_heads // 2
  return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_gguf(path: str):
  import gguf

  if not os.path.exists(path):
    raise UserError(f"{path}: no such GGUF file")
  try:
    return gguf.GGUFReader(path)
  except Exception as e:  # the reader raises ValueError/struct errors for broken files
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise UserError(f"{path}: not a readable GGUF file ({msg})") from None


def _field(reader, key, path, default=None):
  f = reader.fields.get(key)
  if f is None:
    if default is not None:
      return default
    raise UserError(f"{path}: missing GGUF metadata field {key!r}")
  return f.contents()


def config_from_gguf(reader, path: str) -> ModelConfig:
  arch = _field(reader, "general.architecture", path)
  if arch not in ("llama", "qwen2"):
    raise UserError(f"{path}: unknown architecture {arch!r} (supported: llama, qwen2)")
  g = lambda key, default=None: _field(reader, f"{arch}.{key}", path, default)
  H = int(g("attention.head_count"))
  D = int(g("embedding_length"))
  names = {t.name for t in reader.tensors}
  return ModelConfig(
      name=os.path.splitext(os.path.basename(path))[0],
      V=len(_field(reader, "tokenizer.ggml.tokens", path)),
      D=D,
      L=int(g("block_count")),
      H=H,
      K=int(g("attention.head_count_kv", H)),
      Dh=int(g("rope.dimension_count", D // H)),
      F=int(g("feed_forward_length")),
      max_len=int(g("context_length", 2048)),
      rope_theta=float(g("rope.freq_base", 10000.0)),
      rms_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
      tie_embeddings="output.weight" not in names,
      qkv_bias=arch == "qwen2",
  )


def read_tensors(reader, cfg: ModelConfig, path: str) -> Dict[str, np.ndarray]:
  """Dequantized float32 tensors under HF names and in HF row order."""
  from gguf import quants

  out = {}
  for t in reader.tensors:
    name = hf_name(t.name)
    try:
      w = np.asarray(quants.dequantize(t.data, t.tensor_type), np.float32)
    except Exception as e:
      raise UserError(
          f"{path}: cannot dequantize tensor {t.name!r} ({t.tensor_type.name}): {e}"
      ) from None
    if name.endswith("q_proj.weight"):
      w = unpermute_rows(w, cfg.H)
    elif name.endswith("k_proj.weight"):
      w = unpermute_rows(w, cfg.K)
    out[name] = w
  return out


def build_tokenizer(reader, path: str):
  """An HF `tokenizers` byte-level BPE rebuilt from the GGUF vocabulary and merges."""
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

  kind = _field(reader, "tokenizer.ggml.model", path)
  if kind != "gpt2":
    raise UserError(
        f"{path}: tokenizer model {kind!r} is not supported (only byte-level BPE, 'gpt2')"
    )
  pre = _field(reader, "tokenizer.ggml.pre", path, "default")
  if pre not in SUPPORTED_PRE:
    raise UserError(f"{path}: pre-tokenizer {pre!r} is not supported ({', '.join(SUPPORTED_PRE)})")
  tokens = list(_field(reader, "tokenizer.ggml.tokens", path))
  merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", path)]
  types = list(_field(reader, "tokenizer.ggml.token_type", path, [1] * len(tokens)))
  tok = Tokenizer(
      models.BPE(
          vocab={t: i for i, t in enumerate(tokens)},
          merges=merges,
          ignore_merges=pre == "llama-bpe",
      )
  )
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre != "llama-bpe")
  if pre == "smollm":
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level]
    )
  elif pre == "llama-bpe":
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"), byte_level]
    )
  else:
    tok.pre_tokenizer = byte_level
  tok.decoder = decoders.ByteLevel()
  control = [t for t, kind in zip(tokens, types) if kind in (3, 4)]  # CONTROL, USER_DEFINED
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
  meta = {
      "bos_id": int(_field(reader, "tokenizer.ggml.bos_token_id", path, -1)),
      "eos_id": int(_field(reader, "tokenizer.ggml.eos_token_id", path, -1)),
      "pad_id": int(_field(reader, "tokenizer.ggml.padding_token_id", path, -1)),
      "add_bos": bool(_field(reader, "tokenizer.ggml.add_bos_token", path, False)),
      "chat_template": _field(reader, "tokenizer.chat_template", path, ""),
  }
  return tok, meta


def load(path: str):
  """(ModelConfig, params, tokenizer, tokenizer meta) from a GGUF file, every tensor checked."""
  reader = open_gguf(path)
  cfg = config_from_gguf(reader, path)
  tensors = read_tensors(reader, cfg, path)
  layout.check_tensors(cfg, {k: v.shape for k, v in tensors.items()}, path)
  params = layout.params_from_hf(cfg, tensors.__getitem__)
  tokenizer, meta = build_tokenizer(reader, path)
  return cfg, params, tokenizer, meta
