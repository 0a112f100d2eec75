"""A generation job's settings (GenerateConfig, bound through gin) and where its generator
model comes from."""

import dataclasses
import math
import os

import gin

from synthjax import assets, storage
from synthjax.errors import UserError, check_field_types
from synthjax.models import quantize

KV_CACHE_DTYPES = ("float32", "bfloat16")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  input: str  # file glob of documents (any format of data.sources)
  style: str  # hq, qa, easy, hard, textbook, or a template .json
  output_dir: str
  generator: str = assets.EMBEDDED_GENERATOR  # a synthjax model dir, or the embedded name
  text_field: str = "text"
  chunk_tokens: int = 300
  max_new_tokens: int = 384
  temperature: float = 0.3
  top_k: int = 0
  top_p: float = 0.9
  repetition_penalty: float = 1.1
  seed: int = 0
  max_documents: int = 0  # 0: all
  shard_size: int = 8  # documents per output shard
  slots: int = 16  # concurrent sequences
  # '' (as stored), 'float32', 'bfloat16' or 'int8' (layer weights int8 with per-channel scales,
  # the rest and the compute bf16).
  weights: str = ""
  # The KV cache's dtype: '' (the compute dtype), 'float32' or 'bfloat16'. A bf16 cache halves
  # its memory; on a CPU, bf16 weights over an f32 cache ran fastest (README).
  kv_cache: str = ""
  # Devices each copy of the generator is split over (heads, mlp and vocab over "tensor"), for
  # generators that do not fit one device; the host's other devices share out the slots.
  tensor_parallel: int = 1
  # Requests draft this many tokens by prompt lookup and check them in one pass (engine.py):
  # greedy output is plain greedy decoding's; sampled output has plain sampling's distribution
  # but other tokens. 0: off.
  draft_tokens: int = 0
  # Decode steps per call to the device (the host waits once per call). 0:
  # engine.default_decode_steps() (1 on a CPU, 8 on an accelerator).
  decode_steps: int = 0
  # Prompts prefilled together in one call. 0: engine.default_prefill_batch() (1 on a CPU, 8
  # on an accelerator). Like slots, a change can round a few outputs differently (_signature).
  prefill_batch: int = 0
  # The template's text before the chunk (system turn and instructions) is prefilled once and
  # every prompt from its end (engine.py: shared_prefix). Same output up to rounding.
  prefix_cache: bool = True
  max_len: int = 1024  # KV cache length: prompt + output
  apply_filter: bool = True  # False keeps every output (its reason goes in "flag")
  # Hosts work independently (no collectives): host i of n takes shards i, i+n, ... Read from
  # the environment when a config is made, not when this module is imported: a Ray generation
  # actor runs one part after another in one process.
  host_index: int = dataclasses.field(
      default_factory=lambda: int(os.environ.get("SYNTHJAX_PROCESS_ID", 0))
  )
  host_count: int = dataclasses.field(
      default_factory=lambda: int(os.environ.get("SYNTHJAX_NUM_PROCESSES", 1))
  )

  def __post_init__(self):
    check_field_types(self)
    for field in (
        "chunk_tokens",
        "max_new_tokens",
        "shard_size",
        "slots",
        "max_len",
        "host_count",
        "tensor_parallel",
    ):
      if getattr(self, field) <= 0:
        raise UserError(f"GenerateConfig.{field} must be positive, got {getattr(self, field)}")
    for field in ("draft_tokens", "decode_steps", "prefill_batch", "max_documents", "top_k"):
      # 0: off, automatic or all
      if getattr(self, field) < 0:
        raise UserError(f"GenerateConfig.{field} must be 0 or more, got {getattr(self, field)}")
    if not 0 <= self.temperature < math.inf:  # below 0 would favour the least likely tokens
      raise UserError(
          f"GenerateConfig.temperature must be 0 (greedy) or more, got {self.temperature}"
      )
    if not 0 < self.top_p <= 1:
      raise UserError(f"GenerateConfig.top_p must be in (0, 1], got {self.top_p}")
    if not 0 < self.repetition_penalty < math.inf:
      raise UserError(
          f"GenerateConfig.repetition_penalty must be positive (1: none), got "
          f"{self.repetition_penalty}"
      )
    if self.weights not in ("", *quantize.PRECISIONS):
      raise UserError(
          f"GenerateConfig.weights must be '' or one of {quantize.PRECISIONS}, "
          f"got {self.weights!r}"
      )
    if self.kv_cache not in ("", *KV_CACHE_DTYPES):
      raise UserError(
          f"GenerateConfig.kv_cache must be '', 'float32' or 'bfloat16', got {self.kv_cache!r}"
      )
    if not 0 <= self.host_index < self.host_count:
      raise UserError(
          f"GenerateConfig.host_index {self.host_index} is outside 0..{self.host_count - 1}"
      )


def resolve_generator(name: str) -> str:
  """A model directory; the embedded name is converted from its GGUF once and cached."""
  if name != assets.EMBEDDED_GENERATOR:
    if storage.is_remote(name) and storage.exists(storage.join(name, "model.json")):
      return storage.local_folder(name)  # every host reads its own copy
    if not os.path.exists(os.path.join(name, "model.json")):
      raise UserError(
          f"generator {name!r}: not a synthjax model directory (no model.json); "
          "convert a checkpoint with python -m synthjax.convert"
      )
    return name
  out = os.path.join(os.path.expanduser("~"), ".cache", "synthjax", "models", name)
  if not os.path.exists(os.path.join(out, "model.json")):
    from synthjax import convert

    try:
      convert.convert_gguf(name, out)
    except (UserError, OSError):  # another process on this machine converted it first
      if not os.path.exists(os.path.join(out, "model.json")):
        raise
  return out
