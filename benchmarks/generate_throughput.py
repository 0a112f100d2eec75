"""Generation throughput: synthjax's engine vs transformers generate, same SmolLM2-135M weights.

    python benchmarks/generate_throughput.py [--workload both] [--batches 1 8 32 64]
    python benchmarks/generate_throughput.py --random_preset llama3_8b --skip_torch  # a GPU

Two workloads, side by side with transformers `generate` (2 torch threads) in one run:
- real (the job's): --real_prompts chunks of the embedded corpus rendered by the hq, qa and
  textbook templates in turn, the job's sampling (temperature 0.3, top-p 0.9, repetition
  penalty 1.1), --real_new_tokens each (EOS ignored in both, so both do the same work), run
  through --real_batches slots (transformers: batches of that size, left-padded). Tokens/s,
  chunks/s, and the fraction of the compute bound: 2 N FLOPs per prompt and new token over the
  peak. --draft_tokens K also times prompt-lookup speculation (exact speculative sampling);
  --prefill_batch 1 4 times the engine prefilling 1 and 4 prompts per call.
- synthetic: random --prompt_len-token prompts, greedy, --new_tokens each; tokens/s and the
  fraction of the decode roofline, 2 N FLOPs per new token over the peak (transformers at 1
  and 2 threads).
--weights bfloat16 or int8 converts the generator (GenerateConfig.weights) and runs transformers in
bf16; --kv_cache float32 keeps the KV cache in f32 under them (GenerateConfig.kv_cache). The
peak is the better of XLA's and torch's matmul measured in the run in the compute dtype (f32,
or bf16 accumulating in f32), or --peak_tflops.
Compile time is excluded. --random_preset times a model preset's shape with random weights
(no download; speed does not depend on the weights' values). Nothing is asserted; compare
ratios within one run.
"""

import argparse
import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
from train_throughput import matmul_peak_flops, torch_matmul_peak_flops  # noqa: E402

from synthjax.generate.config import KV_CACHE_DTYPES  # noqa: E402
from synthjax.models.quantize import PRECISIONS  # noqa: E402


def prompts(batch, length, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(100, vocab - 100, (batch, length)).tolist()


def workload_prompts(count, tokenizer, chat_template, chunk_tokens=300):
  """The generation job's real prompts: embedded-corpus documents cut into chunks of at most
  `chunk_tokens` and rendered by the hq, qa and textbook templates in turn."""
  import tempfile

  from synthjax.data import demo_corpus, sources
  from synthjax.generate import prompts as P

  fmt = P.chat_format(chat_template)
  templates = [P.load_template(s) for s in ("hq", "qa", "textbook")]
  n_tokens = lambda s: len(tokenizer.encode(s, add_special_tokens=False).ids)
  with tempfile.TemporaryDirectory() as tmp:
    demo_corpus.build(tmp)
    docs = sources.read_documents(os.path.join(tmp, "natural_train.jsonl"))
    out = []
    for doc in docs:
      for piece in P.chunk(doc["text"], chunk_tokens, n_tokens):
        text = P.render(templates[len(out) % 3], piece, fmt)
        out.append(tokenizer.encode(text, add_special_tokens=False).ids)
        if len(out) == count:
          return out
  return out


def random_model(preset):
  """A preset's shape with random weights, made on the device."""
  import flax.linen as nn

  from synthjax import gin_cli
  from synthjax.models.config import ModelConfig
  from synthjax.models.llama import Transformer

  gin_cli.parse([f"models/{preset}.gin"])
  cfg = ModelConfig().replace(max_len=4096)
  params = jax.jit(
      lambda: nn.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))[
          "params"
      ]
  )()
  return cfg, params


def synthjax_tps(
    model, batch, prompt_len, new_tokens, decode_steps=0, prefill_batch=0, cache_dtype=None
):
  from synthjax.generate.engine import Engine
  from synthjax.generate.sampling import Sampling
  from synthjax.generate.slots import Request

  cfg, params = model
  engine = Engine(
      cfg,
      params,
      eos_ids=[],
      slots=batch,
      decode_steps=decode_steps,
      prefill_batch=prefill_batch,
      cache_dtype=cache_dtype,
      max_len=prompt_len + new_tokens + 8,
      buckets=(prompt_len,),
  )
  reqs = [
      Request(p, Sampling(max_new_tokens=new_tokens)) for p in prompts(batch, prompt_len, cfg.V)
  ]
  engine.generate(reqs[:1] + [Request(r.prompt, Sampling(max_new_tokens=2)) for r in reqs[1:]])
  t = time.perf_counter()
  engine.generate(reqs)
  return batch * new_tokens / (time.perf_counter() - t), cfg


def job_sampling() -> dict:
  """The generation job's default sampling (GenerateConfig's defaults)."""
  from synthjax.generate.job import GenerateConfig

  defaults = {f.name: f.default for f in dataclasses.fields(GenerateConfig)}
  return {k: defaults[k] for k in ("temperature", "top_p", "repetition_penalty")}


def synthjax_real(
    model,
    batch,
    prompt_ids,
    new_tokens,
    draft_tokens=0,
    decode_steps=0,
    prefill_batch=0,
    cache_dtype=None,
):
  """Seconds to run every prompt through `batch` slots (compile excluded), and the engine's
  counts (passes, draft tokens proposed and kept)."""
  from synthjax.generate.engine import Engine
  from synthjax.generate.sampling import Sampling
  from synthjax.generate.slots import Request

  cfg, params = model
  engine = Engine(
      cfg,
      params,
      eos_ids=[],
      slots=batch,
      draft_tokens=draft_tokens,
      decode_steps=decode_steps,
      prefill_batch=prefill_batch,
      cache_dtype=cache_dtype,
      max_len=max(map(len, prompt_ids)) + new_tokens + draft_tokens + 8,
  )
  reqs = [
      Request(p, Sampling(max_new_tokens=new_tokens, seed=i, **job_sampling()))
      for i, p in enumerate(prompt_ids)
  ]
  one_per_bucket = {engine._bucket(len(r.prompt)): r for r in reqs}.values()
  longest = max(reqs, key=lambda r: len(r.prompt))
  # compiles each prefill bucket (alone: a batch takes its longest prompt's bucket), and the
  # decode step at each cache length the run reaches
  for r in one_per_bucket:
    engine.generate([Request(r.prompt, dataclasses.replace(r.sampling, max_new_tokens=2))])
  engine.generate([longest])
  engine.stats = dict.fromkeys(engine.stats, 0)
  t = time.perf_counter()
  engine.generate(reqs)
  return time.perf_counter() - t, engine.stats


def transformers_model(gguf, dtype):
  import torch
  import transformers

  return transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=getattr(torch, dtype)
  )


def transformers_real(gguf, batch, prompt_ids, new_tokens, threads, dtype):
  """Seconds for transformers `generate` over the prompts in batches of `batch`, left-padded."""
  import torch

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  model = transformers_model(gguf, dtype)
  kw = dict(
      max_new_tokens=new_tokens,
      min_new_tokens=new_tokens,
      do_sample=True,
      top_k=0,
      pad_token_id=0,
      **job_sampling(),
  )
  with torch.no_grad():
    model.generate(
        torch.tensor([prompt_ids[0][:8]]), max_new_tokens=2, do_sample=False, pad_token_id=0
    )
    t = time.perf_counter()
    for start in range(0, len(prompt_ids), batch):
      group = prompt_ids[start : start + batch]
      width = max(map(len, group))
      ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in group])
      mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
      model.generate(input_ids=ids, attention_mask=mask, **kw)
  return time.perf_counter() - t


def transformers_tps(gguf, batch, prompt_len, new_tokens, threads, vocab, dtype):
  import torch

  torch.set_num_threads(threads)
  model = transformers_model(gguf, dtype)
  x = torch.tensor(prompts(batch, prompt_len, vocab))
  kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
  with torch.no_grad():
    model.generate(x[:, :8], max_new_tokens=2, do_sample=False, pad_token_id=0)
    t = time.perf_counter()
    model.generate(x, **kw)
  return batch * new_tokens / (time.perf_counter() - t)


def real_workload(args, model, name, peak):
  """The job's prompts (hq, qa and textbook in turn), the job's sampling, a fixed number of new
  tokens; the compute bound counts 2 N FLOPs for every prompt and new token."""
  from synthjax import assets
  from synthjax.checkpoints import store
  from synthjax.generate.job import resolve_generator
  from synthjax.models.flops import decode_flops_per_token

  tokenizer, meta = store.load_tokenizer(resolve_generator(assets.EMBEDDED_GENERATOR))
  prompt_ids = workload_prompts(args.real_prompts, tokenizer, meta.get("chat_template", ""))
  count, new = len(prompt_ids), args.real_new_tokens
  prompt_tokens = sum(map(len, prompt_ids))
  bound = (prompt_tokens + count * new) * decode_flops_per_token(model[0]) / peak
  print(
      f"{name}, real workload: {count} prompts (hq, qa, textbook; {prompt_tokens} prompt "
      f"tokens, {min(map(len, prompt_ids))}-{max(map(len, prompt_ids))} each), {new} new "
      f"tokens each (EOS ignored), sampling {job_sampling()}; compute bound {bound:.1f} s"
  )
  figures = {}  # "batch B" -> output tokens/s of each engine setting
  for batch in args.real_batches:
    line = f"batch {batch:3d}:"
    row = figures[f"batch {batch}"] = {}
    for prefill_batch in args.prefill_batch:  # the last one is also the others' reference
      ours, _ = synthjax_real(
          model, batch, prompt_ids, new, 0, args.decode_steps, prefill_batch, args.kv_cache
      )
      row[f"prefill {prefill_batch}"] = count * new / ours
      line += (
          f" synthjax (prefill {prefill_batch}) {count * new / ours:7.1f} tok/s, "
          f"{count / ours:.2f} chunks/s, {bound / ours:.1%} of the compute bound |"
      )
    line = line.rstrip(" |")
    if args.draft_tokens:
      spec, stats = synthjax_real(
          model,
          batch,
          prompt_ids,
          new,
          args.draft_tokens,
          args.decode_steps,
          args.prefill_batch[-1],
          args.kv_cache,
      )
      row[f"{args.draft_tokens} draft tokens"] = count * new / spec
      line += (
          f" | with {args.draft_tokens} draft tokens {count * new / spec:7.1f} tok/s "
          f"(x{ours / spec:.2f}; {stats['accepted']} of {stats['drafted']} drafted kept, "
          f"{stats['passes']} passes)"
      )
    if not args.skip_torch:
      theirs = transformers_real(assets.smollm2_gguf(), batch, prompt_ids, new, 2, args.torch_dtype)
      row["transformers 2 threads"] = count * new / theirs
      line += (
          f" | transformers 2t {count * new / theirs:7.1f} tok/s, {count / theirs:.2f} "
          f"chunks/s (synthjax x{theirs / ours:.2f})"
      )
    print(line, flush=True)
  results.append(
      "generate_throughput",
      {"model": name, "workload": "real", "output_tokens_per_s": figures},
  )


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument(
      "--random_preset",
      default="",
      help="time this gin_configs/models preset with random weights instead",
  )
  p.add_argument(
      "--peak_tflops",
      type=float,
      default=0.0,
      help="the device's datasheet peak; 0: measure an f32 matmul",
  )
  p.add_argument(
      "--workload",
      choices=("synthetic", "real", "both"),
      default="both",
      help="synthetic: random prompts of --prompt_len; real: the job's prompts",
  )
  p.add_argument("--real_prompts", type=int, default=64)
  p.add_argument("--real_new_tokens", type=int, default=200)
  p.add_argument("--real_batches", type=int, nargs="+", default=[32, 64])
  p.add_argument(
      "--draft_tokens",
      type=int,
      default=0,
      help="real workload: also time prompt-lookup speculation with this many",
  )
  p.add_argument(
      "--decode_steps",
      type=int,
      default=0,
      help="decode steps per device call (0: the job's default for the device)",
  )
  p.add_argument(
      "--prefill_batch",
      type=int,
      nargs="+",
      default=[0],
      help="prompts prefilled together (0: the engine's default for the device); "
      "several values time the real workload with each (the last is used "
      "everywhere else)",
  )
  p.add_argument(
      "--weights",
      choices=PRECISIONS,
      default="float32",
      help="the generator's precision (GenerateConfig.weights)",
  )
  p.add_argument(
      "--kv_cache",
      choices=KV_CACHE_DTYPES,
      default=None,
      help="the KV cache's dtype (GenerateConfig.kv_cache); default: the compute's",
  )
  args = p.parse_args()
  args.torch_dtype = "float32" if args.weights == "float32" else "bfloat16"
  from synthjax import assets
  from synthjax.models.flops import decode_flops_per_token

  if args.random_preset:
    model = random_model(args.random_preset)
    name = f"{args.random_preset} (random weights, {model[0].param_dtype})"
  else:
    from synthjax.checkpoints import store
    from synthjax.generate.job import resolve_generator

    model_dir = resolve_generator(assets.EMBEDDED_GENERATOR)
    cfg = store.load_config(model_dir)
    model = (cfg, store.load_params(model_dir, cfg))
    name = f"SmolLM2-135M-Instruct ({args.weights})"
  if args.weights != "float32":
    from synthjax.models import quantize

    model = quantize.convert(*model, args.weights)
  if args.peak_tflops:
    peak = args.peak_tflops * 1e12
    print(f"peak (datasheet): {peak / 1e9:.1f} GFLOP/s")
  else:  # the better of the two libraries' matrix products, as in train_throughput.py
    peak = matmul_peak_flops(dtype=model[0].dtype)
    print(f"{model[0].dtype} matmul peak (2048^3, median), XLA: {peak / 1e9:.1f} GFLOP/s")
    if not args.skip_torch:
      theirs = torch_matmul_peak_flops(dtype=model[0].dtype)
      print(
          f"{model[0].dtype} matmul peak (2048^3, median), torch 2 threads: "
          f"{theirs / 1e9:.1f} GFLOP/s"
      )
      peak = max(peak, theirs)
  print(
      f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); fractions below "
      f"are of {peak / 1e9:.1f} GFLOP/s"
  )
  if args.workload in ("real", "both"):
    real_workload(args, model, name, peak)
  if args.workload == "real":
    return
  print(f"{name}, {args.prompt_len}-token prompts, {args.new_tokens} new tokens, greedy")
  figures = {}  # "batch B" -> tokens/s of synthjax and transformers
  for batch in args.batches:
    ours, cfg = synthjax_tps(
        model,
        batch,
        args.prompt_len,
        args.new_tokens,
        args.decode_steps,
        args.prefill_batch[-1],
        args.kv_cache,
    )
    roof = ours * decode_flops_per_token(cfg) / peak
    line = f"batch {batch:3d}: synthjax {ours:7.1f} tok/s ({roof:.1%} of roofline)"
    row = figures[f"batch {batch}"] = {"synthjax": ours, "of_roofline": roof}
    if not args.skip_torch:
      for threads in (1, 2):
        theirs = transformers_tps(
            assets.smollm2_gguf(),
            batch,
            args.prompt_len,
            args.new_tokens,
            threads,
            cfg.V,
            args.torch_dtype,
        )
        line += f" | transformers {threads}t {theirs:7.1f} tok/s (x{ours / theirs:.2f})"
        row[f"transformers {threads} threads"] = theirs
    print(line, flush=True)
  results.append(
      "generate_throughput",
      {
          "model": name,
          "workload": f"{args.prompt_len}+{args.new_tokens} tokens",
          "output_tokens_per_s": figures,
      },
  )


if __name__ == "__main__":
  main()
