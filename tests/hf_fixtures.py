"""Random tiny transformers models saved with save_pretrained (nothing downloaded)."""

import os


def save_tiny_hf(torch, kind: str, out_dir: str, **overrides) -> str:
  import transformers

  torch.manual_seed(0)
  common = dict(
      vocab_size=211,
      hidden_size=64,
      intermediate_size=96,
      num_hidden_layers=2,
      num_attention_heads=4,
      num_key_value_heads=2,
      max_position_embeddings=256,
      rms_norm_eps=1e-6,
      tie_word_embeddings=False,
  )
  common.update(overrides)
  if kind == "llama":
    config = transformers.LlamaConfig(**common)
    model = transformers.LlamaForCausalLM(config)
  elif kind == "qwen2":
    config = transformers.Qwen2Config(**common)
    model = transformers.Qwen2ForCausalLM(config)
  else:
    raise ValueError(kind)
  # Random init leaves biases and norms at trivial values; perturb them so they are tested.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.eval()
  path = os.path.join(out_dir, kind)
  model.save_pretrained(path)
  return path
