"""Remat (activation checkpointing) policies, chosen by name in gin (ModelConfig.remat).

A policy says which of a layer's intermediate values the backward pass keeps; the others it
recomputes from the layer's input. Less kept, less memory, more compute:
  none            keep everything (no recompute)
  save_dots       keep the outputs of matmuls against weights (q, k, v, o, gate, up, down):
                  recomputes norms, RoPE, attention and activations, about 1/6 more compute
                  for the attention only
  save_attention  keep the attention block's output and q/k/v only: the MLP is recomputed
  full            keep only each layer's input: the whole layer runs twice
"""

import jax

POLICIES = ("none", "save_dots", "save_attention", "full")

# Names the model gives its intermediate values (jax.ad_checkpoint.checkpoint_name).
ATTENTION_NAMES = ("query_proj", "key_proj", "value_proj", "attention_out")


def policy(name: str):
  """The jax.checkpoint policy of a remat name (None for 'none': no remat at all)."""
  if name == "none":
    return None
  if name == "full":
    return jax.checkpoint_policies.nothing_saveable
  if name == "save_dots":
    return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
  if name == "save_attention":
    return jax.checkpoint_policies.save_only_these_names(*ATTENTION_NAMES)
  raise ValueError(f"ModelConfig.remat must be one of {POLICIES}, got {name!r}")
