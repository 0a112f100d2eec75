"""The decoding engine against transformers' greedy generate, and its sampling controls."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synthjax import convert, sharding
from synthjax.checkpoints import store
from synthjax.errors import UserError
from synthjax.generate.engine import Engine
from synthjax.generate.sampling import Sampling, sample_tokens
from synthjax.generate.slots import Request
from synthjax.models import kv_cache
from tests.hf_fixtures import save_tiny_hf

PROMPTS = [
    [5, 17, 42, 8, 99, 3, 12],
    [7, 7, 1],
    [150, 2, 33, 64, 80, 81, 82, 83, 84, 85, 86],
    [9, 200],
]
NEW_TOKENS = [12, 5, 9, 16]  # different lengths so slots free up and refill mid-batch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, torch_module):
  root = tmp_path_factory.mktemp("gen")
  # A wide initialisation makes logits peaked, so greedy choices are not near-ties.
  hf_dir = save_tiny_hf(torch_module, "llama", str(root), initializer_range=0.3)
  out = str(root / "converted")
  convert.main(["--hf_dir", hf_dir, "--out", out])
  cfg = store.load_config(out)
  return hf_dir, cfg, store.load_params(out, cfg)


def _transformers_greedy(torch, hf_dir, prompt, n, eos):
  import transformers

  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  with torch.no_grad():
    out = model.generate(
        torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0
    )
  return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("slots", [4, 2])
def test_greedy_matches_transformers_token_for_token(tiny, torch_module, slots):
  hf_dir, cfg, params = tiny
  engine = Engine(cfg, params, eos_ids=[210], slots=slots, max_len=64, buckets=(8, 16, 32))
  results = engine.generate(
      [Request(p, Sampling(max_new_tokens=n)) for p, n in zip(PROMPTS, NEW_TOKENS)]
  )
  for prompt, n, res in zip(PROMPTS, NEW_TOKENS, results):
    expected = _transformers_greedy(torch_module, hf_dir, prompt, n, 210)
    assert res.tokens == expected
    assert res.finish == ("eos" if expected[-1] == 210 else "length")


def test_cache_that_grows_and_shrinks_keeps_greedy_output(tiny, torch_module):
  # A cache step of 8 positions: the long requests grow the cache, and when they end the
  # short one still running lets it shrink.
  hf_dir, cfg, params = tiny
  prompts, new_tokens = [[5, 17, 42, 8, 99, 3, 12] * 3, [7, 7, 1], [9, 200]], [20, 3, 30]
  engine = Engine(cfg, params, eos_ids=[], slots=2, max_len=64, buckets=(8, 16, 32), cache_step=8)
  results = engine.generate(
      [Request(p, Sampling(max_new_tokens=n)) for p, n in zip(prompts, new_tokens)]
  )
  for prompt, n, res in zip(prompts, new_tokens, results):
    assert res.tokens == _transformers_greedy(torch_module, hf_dir, prompt, n, None)
  assert engine.stats["grown"] > 0 and engine.stats["shrunk"] > 0
  assert kv_cache.length(engine.cache) < 64


def test_engines_with_the_same_settings_share_compiled_programs(tiny):
  """Two engines over one model with the same slots and EOS (the micro study's two synthetic
  kinds) trace and compile each program once per process, whatever their max_len; another EOS
  is another program."""
  from synthjax.generate import programs as device_programs

  _, cfg, params = tiny
  requests = [Request(p, Sampling(max_new_tokens=n)) for p, n in zip(PROMPTS, NEW_TOKENS)]

  def tokens(**kw):
    engine = Engine(cfg, params, slots=3, buckets=(8, 16, 32), cache_step=8, **kw)
    return [r.tokens for r in engine.generate(requests)]

  def programs():
    return [
        f._cache_size()
        for f in (
            device_programs.prefill,
            device_programs.insert,
            device_programs.resize,
            device_programs.decode,
        )
    ]

  first = tokens(eos_ids=[210], max_len=64)
  compiled = programs()
  assert tokens(eos_ids=[210], max_len=48) == first
  assert programs() == compiled
  tokens(eos_ids=[7], max_len=64)
  assert programs()[3] > compiled[3]


def test_a_bf16_cache_under_f32_weights_keeps_greedy_output(tiny):
  """GenerateConfig.kv_cache apart from the weights: keys and values rounded to bf16 (the
  tiny model's logits are peaked, so greedy choices are not near-ties), written into the cache
  by prefill and by every decode step."""
  _, cfg, params = tiny
  requests = [Request(p, Sampling(max_new_tokens=n)) for p, n in zip(PROMPTS, NEW_TOKENS)]
  plain = Engine(cfg, params, eos_ids=[], slots=2, max_len=64).generate(requests)
  engine = Engine(cfg, params, eos_ids=[], slots=2, max_len=64, cache_dtype="bfloat16")
  assert engine.cache[0]["k"].dtype == jnp.bfloat16 and cfg.dtype == "float32"
  assert [r.tokens for r in engine.generate(requests)] == [r.tokens for r in plain]
  assert engine.cache[0]["v"].dtype == jnp.bfloat16


def test_sharded_engine_matches_one_device(tiny):
  """Over a mesh (slots split over "data", weights over "tensor") and prefilling two prompts
  at a time, against one device and one prompt at a time."""
  _, cfg, params = tiny
  requests = [Request(p, Sampling(max_new_tokens=n)) for p, n in zip(PROMPTS, NEW_TOKENS)]
  # a cache step of 8 positions, so the cache also grows on the mesh
  single = Engine(cfg, params, eos_ids=[210], slots=4, max_len=64, cache_step=8)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 4})
  sharded = Engine(
      cfg, params, eos_ids=[210], slots=4, max_len=64, mesh=mesh, cache_step=8, prefill_batch=2
  )  # an accelerator's default batches prompts
  q = sharded.params["layers_0"]["attn"]["q"]
  assert q.sharding.spec[1] == "tensor" and {s.data.shape for s in q.addressable_shards} == {
      (64, 1, 16)
  }
  assert [r.tokens for r in sharded.generate(requests)] == [
      r.tokens for r in single.generate(requests)
  ]
  assert sharded.stats["grown"] > 0


@pytest.mark.parametrize("mesh_axes", [None, {"data": 4, "fsdp": 1, "tensor": 2}])
def test_a_ragged_cache_gives_the_dense_caches_tokens(tiny, mesh_axes):
  """Decode steps that read each row only up to its own length (the GPU kernel, interpreted
  here) against the dense cache, greedy, on prompts of mixed lengths whose slots free up and
  refill, a cache that grows, a max_len off the kernel's block, a shared prefix and drafts;
  on one device and with rows and kv heads split over a mesh."""
  _, cfg, params = tiny
  prefix = [3, 141, 59, 26, 53, 58, 97, 93, 23]
  prompts = PROMPTS + [prefix + p for p in PROMPTS]
  requests = [Request(p, Sampling(max_new_tokens=n)) for p, n in zip(prompts, NEW_TOKENS * 2)]
  mesh = sharding.make_mesh(mesh_axes) if mesh_axes else None

  def run(decode_attention, **kw):
    engine = Engine(
        cfg,
        params,
        eos_ids=[210],
        slots=4,
        max_len=100,
        cache_step=8,
        mesh=mesh,
        decode_attention=decode_attention,
        shared_prefix=prefix,
        **kw,
    )
    return [r.tokens for r in engine.generate(requests)], engine

  dense, _ = run("dense")
  ragged, engine = run("ragged")
  assert ragged == dense
  assert engine.cache[0]["k"].shape[2] % 16 == 0 and engine.stats["grown"] > 0
  assert engine.stats["from_prefix"] == len(PROMPTS)
  drafted, engine = run("ragged", draft_tokens=3)
  assert drafted == dense and engine.stats["drafted"] > 0


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_prefilling_several_prompts_together_gives_the_same_tokens(tiny, precision):
  """Batches of 3 prompts (a short one repeats a request) against one prompt per call:
  greedy and sampled requests of different lengths, refilling slots mid-run. bf16 takes the
  other cache write."""
  from synthjax.models import quantize

  _, cfg, params = tiny
  if precision != "float32":
    cfg, params = quantize.convert(cfg, params, precision)
  sampled = Sampling(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=10)
  requests = [Request(p, Sampling(max_new_tokens=n)) for p, n in zip(PROMPTS, NEW_TOKENS)]
  requests += [
      Request(p[::-1] * 2, dataclasses.replace(sampled, seed=k)) for k, p in enumerate(PROMPTS)
  ]

  def run(prefill_batch):
    engine = Engine(
        cfg,
        params,
        eos_ids=[210],
        slots=4,
        max_len=64,
        buckets=(8, 16, 32),
        prefill_batch=prefill_batch,
    )
    return [(r.tokens, r.finish) for r in engine.generate(requests)], engine.stats

  one, one_stats = run(1)
  three, stats = run(3)
  assert three == one
  assert one_stats["prefills"] == len(requests) and stats["prefills"] < len(requests) / 2


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_shared_prefix_prefilled_once_gives_the_same_tokens(tiny, precision):
  """Prompts that start with a template's prefix, prefilled from its end over its stored keys
  and values, against whole prefills: greedy and sampled (with a repetition penalty, which
  must count the prefix's tokens as seen). Prompts without the prefix, one that is only the
  prefix, and one whose rest would not fit a bucket within the cache are prefilled whole."""
  from synthjax.models import quantize

  _, cfg, params = tiny
  if precision != "float32":
    cfg, params = quantize.convert(cfg, params, precision)
  prefix = [3, 141, 59, 26, 53, 58, 97, 93, 23]
  sampled = Sampling(temperature=1.0, top_p=0.9, repetition_penalty=1.5, max_new_tokens=10)
  requests = [Request(prefix + p, Sampling(max_new_tokens=n)) for p, n in zip(PROMPTS, NEW_TOKENS)]
  requests += [
      Request(prefix + p[::-1], dataclasses.replace(sampled, seed=k)) for k, p in enumerate(PROMPTS)
  ]
  requests += [
      Request(PROMPTS[0], sampled),
      Request(prefix, Sampling(max_new_tokens=4)),
      Request(prefix + [7] * 33, Sampling(max_new_tokens=4)),
  ]

  def run(shared_prefix):
    engine = Engine(
        cfg,
        params,
        eos_ids=[210],
        slots=3,
        max_len=96,
        buckets=(8, 16, 32, 48, 96),
        shared_prefix=shared_prefix,
    )
    return [(r.tokens, r.finish) for r in engine.generate(requests)], engine.stats

  whole, whole_stats = run(())
  shared, stats = run(prefix)
  assert shared == whole
  assert stats["from_prefix"] == 8 and whole_stats["from_prefix"] == 0


def test_the_stored_prefix_comes_from_the_prompts_prefill_program(tiny):
  """The prefix's keys and values are computed by the compiled program that then prefills the
  prompts of its bucket after it (an input placed otherwise made a program of its own)."""
  from synthjax.generate import programs

  _, cfg, params = tiny
  prefix = [3, 141, 59, 26, 53, 58, 97, 93, 23]  # bucket 16, as every prompt's rest
  engine = Engine(
      cfg, params, eos_ids=[210], slots=5, max_len=96, buckets=(16, 96), shared_prefix=prefix
  )  # 5 slots: programs no other test compiled
  before = programs.prefill._cache_size()
  engine.generate([Request(prefix + p, Sampling(max_new_tokens=2)) for p in PROMPTS])
  assert engine.stats["from_prefix"] == len(PROMPTS)
  assert programs.prefill._cache_size() == before + 1


def test_several_decode_steps_per_call_give_the_same_tokens(tiny):
  """Four steps per device call against one: greedy and sampled requests, ending by EOS, by
  max new tokens, by a full cache and by a stop string found on the host mid-call."""
  _, cfg, params = tiny
  text = lambda ids: "," + ",".join(map(str, ids)) + ","

  def run(steps, stop=()):
    engine = Engine(
        cfg, params, eos_ids=[210], slots=3, max_len=40, decode_text=text, decode_steps=steps
    )
    sampled = Sampling(
        temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=13, seed=4
    )
    requests = [Request(p, Sampling(max_new_tokens=n)) for p, n in zip(PROMPTS, NEW_TOKENS)]
    requests += [Request(PROMPTS[0], sampled, stop), Request(PROMPTS[2] * 3, sampled)]
    return engine.generate(requests), engine.stats

  one, _ = run(1)
  stop = (text(one[4].tokens[5:7]),)  # a stop string that ends inside a 4-step call
  one_stopped, _ = run(1, stop)
  four, stats = run(4)
  four_stopped, _ = run(4, stop)
  assert [(r.tokens, r.finish) for r in four] == [(r.tokens, r.finish) for r in one]
  assert [(r.tokens, r.finish) for r in four_stopped] == [(r.tokens, r.finish) for r in one_stopped]
  assert {r.finish for r in one} >= {"length", "context"}  # not vacuous
  assert one_stopped[4].finish == "stop" and len(one_stopped[4].tokens) == 7
  assert stats["passes"] < stats["tokens"] / 2  # several tokens per call


def test_sampling_is_per_request_reproducible(tiny):
  _, cfg, params = tiny
  s = Sampling(
      temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.2, max_new_tokens=8, seed=7
  )
  a = Engine(cfg, params, eos_ids=[], slots=1).generate([Request(PROMPTS[0], s)])
  b = Engine(cfg, params, eos_ids=[], slots=3).generate(
      [Request(PROMPTS[1], Sampling(max_new_tokens=3)), Request(PROMPTS[0], s)]
  )
  assert a[0].tokens == b[1].tokens  # same seed, other slot and batch: same text
  c = Engine(cfg, params, eos_ids=[], slots=1).generate(
      [Request(PROMPTS[0], Sampling(**{**s.__dict__, "seed": 8}))]
  )
  assert c[0].tokens != a[0].tokens


def test_sample_tokens_controls():
  logits = jnp.asarray([[0.0, 1.0, 5.0, 2.0]] * 3)
  keys = jax.random.split(jax.random.key(0), 3)
  ones = jnp.ones(3)
  seen = jnp.zeros((3, 4), bool)
  greedy = sample_tokens(logits, keys, jnp.zeros(3), jnp.zeros(3, jnp.int32), ones, ones, seen)
  assert greedy.tolist() == [2, 2, 2]
  top1 = [
      sample_tokens(
          logits,
          jax.random.split(jax.random.key(i), 3),
          ones * 5.0,
          jnp.ones(3, jnp.int32),
          ones,
          ones,
          seen,
      ).tolist()
      for i in range(5)
  ]
  assert all(t == [2, 2, 2] for t in top1)  # top-k 1 is greedy whatever the temperature
  nucleus = [
      sample_tokens(
          logits,
          jax.random.split(jax.random.key(i), 3),
          ones,
          jnp.zeros(3, jnp.int32),
          ones * 0.5,
          ones,
          seen,
      ).tolist()
      for i in range(5)
  ]
  assert all(t == [2, 2, 2] for t in nucleus)  # token 2 alone holds over half the mass
  spread = {
      tuple(
          sample_tokens(
              logits * 0.01,
              jax.random.split(jax.random.key(i), 3),
              ones,
              jnp.zeros(3, jnp.int32),
              ones,
              ones,
              seen,
          ).tolist()
      )
      for i in range(5)
  }
  assert len(spread) > 1  # flat logits, no truncation: samples differ
  penalised = sample_tokens(
      logits,
      keys,
      jnp.zeros(3),
      jnp.zeros(3, jnp.int32),
      ones,
      ones * 10.0,
      seen.at[:, 2].set(True),
  )
  assert penalised.tolist() == [3, 3, 3]  # 5/10 < 2: the seen token loses


def test_greedy_token_is_argmax_first_among_equal_logits():
  """The engine's argmax (a max, then the least index reaching it) is jnp.argmax's, ties
  included: a tie goes to the lower token id."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 300)).astype(np.float32)
  logits[1, [7, 250]] = 9.0  # a tie for the maximum
  logits[2] = 0.0  # every token ties
  logits[3, [299, 0]] = 8.0  # the last and the first
  logits[4, -1] = 10.0  # the maximum at the last index
  zeros = jnp.zeros(6)
  greedy = sample_tokens(
      jnp.asarray(logits),
      jax.random.split(jax.random.key(0), 6),
      zeros,
      jnp.zeros(6, jnp.int32),
      jnp.ones(6),
      jnp.ones(6),
      jnp.zeros((6, 300), bool),
  )
  assert greedy.tolist() == np.argmax(logits, axis=-1).tolist()
  assert greedy.tolist()[1:5] == [7, 0, 0, 299]


def test_each_row_samples_as_it_would_in_a_batch_of_its_own_kind():
  """Greedy, full-vocabulary and top-k/top-p rows in one batch: each draw runs only when some
  row needs it, and no row's token depends on the others'."""
  logits = jax.random.normal(jax.random.key(1), (3, 50)) * 2
  keys = jax.random.split(jax.random.key(2), 3)
  settings = (
      jnp.asarray([0.0, 1.0, 1.0]),
      jnp.asarray([0, 0, 5], jnp.int32),
      jnp.asarray([1.0, 1.0, 0.9]),
      jnp.ones(3),
  )
  seen = jnp.zeros((3, 50), bool)
  mixed = sample_tokens(logits, keys, *settings, seen).tolist()
  for row in range(3):
    same = jnp.asarray([row] * 3)
    alone = sample_tokens(logits[same], keys[same], *(s[same] for s in settings), seen)
    assert alone.tolist() == [mixed[row]] * 3
  assert mixed[0] == int(jnp.argmax(logits[0]))


def test_prompt_longer_than_context_is_a_clear_error(tiny):
  _, cfg, params = tiny
  engine = Engine(cfg, params, eos_ids=[], slots=1, max_len=16, buckets=(8, 16))
  with pytest.raises(UserError, match="prompt of 20 tokens is longer than the context"):
    engine.generate([Request(list(range(1, 21)))])


def test_prompt_lookup_speculation_gives_plain_greedy_output(tiny):
  _, cfg, params = tiny
  # Prompts that repeat themselves, so drafts are found and some are right.
  rng = np.random.default_rng(5)
  phrases = [list(rng.integers(5, 200, 6)) for _ in range(4)]
  prompts = [phrases[i % 4] * 3 + phrases[(i + 1) % 4] * 2 + phrases[i % 4][:3] for i in range(6)]
  requests = [
      Request(p, Sampling(max_new_tokens=n, repetition_penalty=r))
      for p, n, r in zip(prompts, [24, 9, 30, 17, 24, 5], [1.0, 1.3, 1.0, 1.0, 1.1, 1.0])
  ]
  plain = Engine(cfg, params, eos_ids=[210], slots=4, max_len=96)
  speculative = Engine(cfg, params, eos_ids=[210], slots=4, max_len=96, draft_tokens=4)
  expected = plain.generate(requests)
  got = speculative.generate(requests)
  assert [r.tokens for r in got] == [r.tokens for r in expected]
  assert [r.finish for r in got] == [r.finish for r in expected]
  # not vacuous: drafts were proposed and some of their tokens kept (a slot then added several
  # tokens in one pass)
  stats = speculative.stats
  assert stats["drafted"] > 0 and stats["accepted"] > 0
  assert stats["tokens"] == plain.stats["tokens"] == sum(len(r.tokens) - 1 for r in expected)


def _nucleus_probabilities(logits, temperature, top_p, penalty, seen):
  """The sampling distribution written out directly in numpy: penalty, temperature, then the
  smallest set of most likely tokens holding top_p of the mass, renormalised."""
  x = np.where(seen, np.where(logits > 0, logits / penalty, logits * penalty), logits)
  p = np.exp(x / temperature - np.max(x / temperature))
  p /= p.sum()
  order = np.argsort(-p)
  before = np.cumsum(p[order]) - p[order]
  keep = np.zeros_like(p, bool)
  keep[order[before < top_p]] = True
  q = np.where(keep, p, 0.0)
  return q / q.sum()


@pytest.mark.parametrize(
    "top_p,draft,penalty", [(1.0, 1, 1.0), (0.8, 1, 1.0), (0.8, 6, 1.0), (0.9, 0, 1.5)]
)
def test_a_sampled_row_with_a_draft_gets_its_token_from_the_plain_distribution(
    top_p, draft, penalty
):
  """Speculative sampling with a draft token d: keep d with probability p(d), else draw from p
  without d. Over many keys the tokens must follow p itself, whether d is likely, outside the
  nucleus (never kept), or penalised as seen."""
  n = 20000
  logits = np.asarray([3.0, 2.6, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0], np.float32)
  seen = np.zeros(8, bool)
  seen[0] = True
  expected = _nucleus_probabilities(logits, 0.7, top_p, penalty, seen)
  rows = lambda x: jnp.asarray(np.repeat(np.asarray(x)[None], n, axis=0))
  tokens = sample_tokens(
      rows(logits),
      jax.random.split(jax.random.key(3), n),
      jnp.full(n, 0.7),
      jnp.zeros(n, jnp.int32),
      jnp.full(n, top_p),
      jnp.full(n, penalty),
      rows(seen),
      jnp.full(n, draft, jnp.int32),
  )
  freq = np.bincount(np.asarray(tokens), minlength=8) / n
  sigma = np.sqrt(expected * (1 - expected) / n) + 1e-9
  assert np.all(np.abs(freq - expected) < 5 * sigma + 1e-4), (freq, expected)
  assert (expected[draft] == 0) == (freq[draft] == 0)  # a draft outside the nucleus never kept


def test_prompt_lookup_speculation_samples_from_the_plain_distribution(tiny):
  """Sampled requests with drafts against the same requests decoded plainly, 600 seeds each:
  the first three new tokens' joint distribution must agree (chi-square two-sample test)."""
  from scipy.stats import chi2_contingency

  _, cfg, params = tiny
  # Every token from 5 up occurs once in the prompt, so most new tokens find a draft: the
  # tokens that followed it there.
  prompt = [int(t) for t in np.random.default_rng(0).permutation(np.arange(5, cfg.V))]

  def run(draft_tokens):
    engine = Engine(
        cfg, params, eos_ids=[], slots=16, max_len=len(prompt) + 8, draft_tokens=draft_tokens
    )
    results = engine.generate(
        [
            Request(prompt, Sampling(temperature=1.0, top_p=0.95, max_new_tokens=3, seed=s))
            for s in range(600)
        ]
    )
    return [tuple(r.tokens) for r in results], engine.stats

  plain, _ = run(0)
  speculative, stats = run(3)
  assert stats["drafted"] > 0 and stats["accepted"] > 0  # some draft tokens were kept
  common = [k for k in set(plain) | set(speculative) if plain.count(k) + speculative.count(k) >= 10]
  table = [
      [seq.count(k) for k in common] + [sum(1 for x in seq if x not in common)]
      for seq in (plain, speculative)
  ]
  assert chi2_contingency(np.asarray(table)).pvalue > 1e-3, table
