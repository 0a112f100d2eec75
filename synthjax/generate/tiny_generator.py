"""A random tiny generator with the embedded generator's real tokenizer and chat template:
what smoke tests and the `smoke` study preset generate with (fast, meaningless text)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from synthjax import assets
from synthjax.checkpoints import gguf_import, store
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig
from synthjax.models.llama import Transformer


def make(out_dir: str, seed: int = 0, D: int = 64, L: int = 2) -> str:
  if os.path.exists(os.path.join(out_dir, "model.json")):
    return out_dir
  reader = gguf_import.open_gguf(assets.smollm2_gguf())
  tokenizer, meta = gguf_import.build_tokenizer(reader, assets.smollm2_gguf())
  cfg = ModelConfig(
      name="tiny-random-generator",
      V=tokenizer.get_vocab_size(),
      D=D,
      L=L,
      H=4,
      K=2,
      Dh=D // 4,
      F=2 * D,
      max_len=2048,
      tie_embeddings=True,
  )
  params = nn.unbox(Transformer(cfg).init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32)))
  try:
    store.save_model(out_dir, cfg, params["params"], tokenizer, meta)
  except (UserError, OSError):  # another host of the job made it first (the same model)
    if not os.path.exists(os.path.join(out_dir, "model.json")):
      raise
  return out_dir
