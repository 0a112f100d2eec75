"""Generation throughput: synthjax's engine vs transformers generate, same SmolLM2-135M weights.

    python benchmarks/generate_throughput.py [--workload both] [--batches 1 8 32 64]
    python benchmarks/generate_throughput.py --random_preset llama3_8b --weights bfloat16 \
        --workload real --real_prompts 512 --real_batches 64 128 256 512 --real_new_tokens 300 \
        --decode_attention dense ragged --hbm_gbs 4800 --peak_tflops 989 --skip_torch  # an H200

Two workloads, side by side with transformers `generate` (2 torch threads) in one run:
- real (the job's): --real_prompts chunks of the embedded corpus rendered by the hq, qa and
  textbook templates in turn, the job's sampling (temperature 0.3, top-p 0.9, repetition
  penalty 1.1), --real_new_tokens each (EOS ignored in both, so both do the same work), run
  through --real_batches slots (transformers: batches of that size, left-padded). Tokens/s,
  chunks/s, and the fraction of the compute bound: 2 N FLOPs per prompt and new token over the
  peak; per chip (and per host when the engine spans all of the host's chips), prompt
  tokens/s (a run with one new token each), and with --hbm_gbs (a chip's datasheet memory
  bandwidth) the decode's share of the memory-bandwidth bound: every weight read once a step
  and each token's cached positions once, over the run's time less the prompt run's.
  --draft_tokens K also times prompt-lookup speculation (exact speculative sampling);
  --prefill_batch 1 4 and --decode_attention dense ragged time those engine settings side by
  side; --tensor_parallel N splits the generator over N chips, and --data_parallel M runs M
  such copies in one engine (as the job spans a host's chips; 1: one engine per copy).
  --save_prompts F writes the prompts (token ids) and stops; --prompts_file F reads them
  where the embedded corpus and tokenizer are not installed.
- synthetic: random --prompt_len-token prompts, greedy, --new_tokens each; tokens/s and the
  fraction of the decode roofline, 2 N FLOPs per new token over the peak (transformers at 1
  and 2 threads).
--weights bfloat16 or int8 converts the generator (GenerateConfig.weights) and runs transformers in
bf16; --kv_cache float32 keeps the KV cache in f32 under them (GenerateConfig.kv_cache). The
peak is the better of XLA's and torch's matmul measured in the run in the compute dtype (f32,
or bf16 accumulating in f32), or --peak_tflops.
Compile time is excluded. --random_preset times a model preset's shape with random weights
made in the --weights precision (no download, and no f32 copy of a 70B model; speed does not
depend on the weights' values). Nothing is asserted; compare
ratios within one run.
"""

import argparse
import dataclasses
import json
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


def random_model(preset, mesh, weights="float32"):
  """A preset's shape with random weights, made on the device(s) in the precision asked, so a
  70B generator never exists in f32: bf16, or int8 layer weights (zeros with unit scales; the
  speed does not depend on the values). Placed on the engine's mesh as the engine splits
  them."""
  import flax.linen as nn

  from synthjax import gin_cli, sharding
  from synthjax.models.config import ModelConfig
  from synthjax.models.llama import Transformer, abstract_params

  gin_cli.parse([f"models/{preset}.gin"])
  cfg = ModelConfig().replace(max_len=4096)
  if weights != "float32":
    weight_kind = "int8" if weights == "int8" else "float"
    cfg = cfg.replace(dtype="bfloat16", param_dtype="bfloat16", weights=weight_kind)
  shardings = sharding.logical_shardings(abstract_params(cfg), mesh, sharding.logical_axis_rules())
  init = lambda: Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  return cfg, jax.jit(lambda: nn.unbox(init())["params"], out_shardings=shardings)()


def engine_mesh(tensor_parallel, data_parallel=1):
  """`data_parallel` copies of the generator, each over `tensor_parallel` devices: one engine
  whose slots are split over the copies, as the generation job spans a host's chips."""
  from synthjax import sharding

  chips = tensor_parallel * data_parallel
  return sharding.make_mesh(
      {"data": data_parallel, "fsdp": 1, "tensor": tensor_parallel}, jax.devices()[:chips]
  )


def synthjax_tps(model, batch, prompt_len, new_tokens, **engine_kw):
  from synthjax.generate.engine import Engine
  from synthjax.generate.sampling import Sampling
  from synthjax.generate.slots import Request

  cfg, params = model
  engine = Engine(
      cfg,
      params,
      eos_ids=[],
      slots=batch,
      max_len=prompt_len + new_tokens + 8,
      buckets=(prompt_len,),
      **engine_kw,
  )
  reqs = [
      Request(p, Sampling(max_new_tokens=new_tokens)) for p in prompts(batch, prompt_len, cfg.V)
  ]
  engine.generate(reqs[:1] + [Request(r.prompt, Sampling(max_new_tokens=2)) for r in reqs[1:]])
  t = time.perf_counter()
  engine.generate(reqs)
  return batch * new_tokens / (time.perf_counter() - t), cfg


def embedded_prompts(count):
  """`workload_prompts` through the embedded generator's tokenizer and chat template."""
  from synthjax import assets
  from synthjax.checkpoints import store
  from synthjax.generate.job import resolve_generator

  tokenizer, meta = store.load_tokenizer(resolve_generator(assets.EMBEDDED_GENERATOR))
  return workload_prompts(count, tokenizer, meta.get("chat_template", ""))


def real_prompts(args, vocab):
  """The real workload's prompts: from --prompts_file (as --save_prompts wrote them, for a
  machine without the embedded packages) or made here; each token id must be in the model's
  vocabulary."""
  from synthjax import storage
  from synthjax.errors import UserError

  if not args.prompts_file:
    ids = embedded_prompts(args.real_prompts)
  else:
    try:
      ids = storage.read_json(args.prompts_file)  # a local path or an object-store URL
    except UserError as e:  # names the path
      sys.exit(f"--prompts_file {e}")
    except OSError as e:  # storage leaves a missing file to its caller
      sys.exit(f"--prompts_file {args.prompts_file}: {e.strerror or e}")
    is_ids = lambda p: isinstance(p, list) and p and all(isinstance(t, int) for t in p)
    if not (isinstance(ids, list) and all(map(is_ids, ids))):
      sys.exit(f"--prompts_file {args.prompts_file}: not a list of token-id lists")
    if len(ids) < args.real_prompts:
      sys.exit(
          f"--prompts_file {args.prompts_file} holds {len(ids)} prompts; --real_prompts "
          f"asks for {args.real_prompts}"
      )
    ids = ids[: args.real_prompts]
  largest = max(max(p) for p in ids)
  if largest >= vocab:
    sys.exit(f"prompt token id {largest} is outside the model's vocabulary of {vocab}")
  return ids


def job_sampling() -> dict:
  """The generation job's default sampling (GenerateConfig's defaults)."""
  from synthjax.generate.job import GenerateConfig

  defaults = {f.name: f.default for f in dataclasses.fields(GenerateConfig)}
  return {k: defaults[k] for k in ("temperature", "top_p", "repetition_penalty")}


def synthjax_real(model, batch, prompt_ids, new_tokens, **engine_kw):
  """Seconds to run every prompt through `batch` slots (compile excluded), and the engine's
  counts (passes, decode steps, draft tokens proposed and kept)."""
  from synthjax.generate.engine import Engine
  from synthjax.generate.sampling import Sampling
  from synthjax.generate.slots import Request

  cfg, params = model
  engine = Engine(
      cfg,
      params,
      eos_ids=[],
      slots=batch,
      max_len=max(map(len, prompt_ids)) + new_tokens + engine_kw.get("draft_tokens", 0) + 8,
      **engine_kw,
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


def decode_bytes(model, prompt_ids, new_tokens, steps, kv_dtype, copies=1):
  """The least a run's decode steps must read from memory: every weight of each copy of the
  generator once a step, and each new token's cached positions (its prompt and the tokens
  before it) once."""
  cfg, params = model
  weights = sum(x.nbytes for x in jax.tree.leaves(params))
  per_position = 2 * cfg.L * cfg.K * cfg.Dh * jnp.dtype(kv_dtype or cfg.dtype).itemsize
  positions = sum(len(p) * new_tokens + new_tokens * (new_tokens - 1) // 2 for p in prompt_ids)
  return steps * weights * copies + positions * per_position


def real_workload(args, model, name, peak, mesh):
  """The job's prompts (hq, qa and textbook in turn), the job's sampling, a fixed number of new
  tokens; the compute bound counts 2 N FLOPs for every prompt and new token. Per slot count
  and engine setting: output tokens/s (per chip, and per host when the engine spans the
  host's devices), prompt tokens/s (a run with one new token each, prefill alone), and with
  --hbm_gbs the share of the memory-bandwidth bound the decode reached (its time taken as the
  whole run's less the prefill run's)."""
  from synthjax import assets
  from synthjax.models.flops import decode_flops_per_token

  prompt_ids = real_prompts(args, model[0].V)
  count, new = len(prompt_ids), args.real_new_tokens
  prompt_tokens = sum(map(len, prompt_ids))
  chips, host_chips = mesh.size, jax.local_device_count()
  bound = (prompt_tokens + count * new) * decode_flops_per_token(model[0]) / (peak * chips)
  print(
      f"{name}, real workload: {count} prompts (hq, qa, textbook; {prompt_tokens} prompt "
      f"tokens, {min(map(len, prompt_ids))}-{max(map(len, prompt_ids))} each), {new} new "
      f"tokens each (EOS ignored), sampling {job_sampling()}; on {chips} of this host's "
      f"{host_chips} chips; compute bound {bound:.1f} s"
  )
  span = "the host" if chips == host_chips else f"{chips} of the host's {host_chips} chips"
  figures = {}  # "batch B" -> figures of each engine setting
  for batch in args.real_batches:
    print(f"batch {batch}:", flush=True)
    row = figures[f"batch {batch}"] = {}
    for attention in args.decode_attention:  # side by side, in this run
      for prefill_batch in args.prefill_batch:
        kw = dict(
            decode_steps=args.decode_steps,
            prefill_batch=prefill_batch,
            cache_dtype=args.kv_cache,
            mesh=mesh,
            decode_attention=attention,
        )
        ours, stats = synthjax_real(model, batch, prompt_ids, new, **kw)
        prefill, _ = synthjax_real(model, batch, prompt_ids, 1, **kw)
        setting = f"{attention or 'default'} attention, prefill {prefill_batch}"
        out = row[setting] = {
            "output_tokens_per_s": count * new / ours,
            "per_chip": count * new / ours / chips,
            "prompt_tokens_per_s": prompt_tokens / prefill,
            "of_compute_bound": bound / ours,
            "decode_steps": stats["steps"],
            "device_calls": stats["passes"],
        }
        line = (
            f"  {setting}: {count * new / ours:8.1f} output tok/s on {span} ("
            f"{out['per_chip']:.1f} per chip), {count / ours:.2f} chunks/s, "
            f"{prompt_tokens / prefill:.0f} prompt tok/s, "
            f"{bound / ours:.1%} of the compute bound, {stats['steps']} decode steps in "
            f"{stats['passes']} decode calls"
        )
        decode_s = ours - prefill
        if args.hbm_gbs and decode_s <= 0:  # a run too short for the difference to mean much
          line += ", decode shorter than the timing's noise: no bandwidth share"
        elif args.hbm_gbs:
          least = decode_bytes(
              model, prompt_ids, new, stats["steps"], args.kv_cache, mesh.shape["data"]
          )
          out["of_bandwidth_bound"] = least / (args.hbm_gbs * 1e9 * chips) / decode_s
          line += (
              f", decode {decode_s:.1f} s: {out['of_bandwidth_bound']:.1%} of the "
              "memory-bandwidth bound"
          )
        print(line, flush=True)
    if args.draft_tokens:
      spec, stats = synthjax_real(
          model,
          batch,
          prompt_ids,
          new,
          draft_tokens=args.draft_tokens,
          decode_steps=args.decode_steps,
          prefill_batch=args.prefill_batch[-1],
          cache_dtype=args.kv_cache,
          mesh=mesh,
          decode_attention=args.decode_attention[-1],
      )
      row[f"{args.draft_tokens} draft tokens"] = {
          "output_tokens_per_s": count * new / spec,
          "drafted": stats["drafted"],
          "kept": stats["accepted"],
          "decode_steps": stats["steps"],
      }
      print(
          f"  with {args.draft_tokens} draft tokens {count * new / spec:7.1f} tok/s "
          f"(x{ours / spec:.2f} the last setting; {stats['accepted']} of {stats['drafted']} "
          f"drafted kept, {stats['steps']} steps, each a pass that checks the drafts)",
          flush=True,
      )
    if not args.skip_torch:
      theirs = transformers_real(assets.smollm2_gguf(), batch, prompt_ids, new, 2, args.torch_dtype)
      row["transformers 2 threads"] = count * new / theirs
      print(
          f"  transformers 2t {count * new / theirs:7.1f} tok/s, {count / theirs:.2f} chunks/s "
          f"(synthjax's last setting x{theirs / ours:.2f})",
          flush=True,
      )
  results.append(
      "generate_throughput",
      {
          "model": name,
          "workload": "real",
          "chips": chips,
          "copies": mesh.shape["data"],
          "per_batch": figures,
      },
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
  p.add_argument(
      "--tensor_parallel",
      type=int,
      default=1,
      help="chips one copy of the generator is split over (GenerateConfig.tensor_parallel)",
  )
  p.add_argument(
      "--data_parallel",
      type=int,
      default=1,
      help="copies of the generator in one engine, the slots split over them (the job spans "
      "a host's chips so); 1 times one engine per copy's chips",
  )
  p.add_argument(
      "--decode_attention",
      nargs="+",
      default=[""],
      choices=("", "dense", "ragged"),
      help="how decode steps read the KV cache ('': the engine's default for the device); "
      "several values are timed side by side (the last is used everywhere else)",
  )
  p.add_argument(
      "--hbm_gbs",
      type=float,
      default=0.0,
      help="a chip's datasheet memory bandwidth in GB/s (H200: 4800); real workload: the "
      "decode's share of the bound it sets",
  )
  p.add_argument(
      "--save_prompts",
      default="",
      help="write --real_prompts of the real workload's prompts (token ids, JSON) to this "
      "file and stop",
  )
  p.add_argument(
      "--prompts_file",
      default="",
      help="the real workload's prompts from a --save_prompts file (for a machine without "
      "the embedded corpus and tokenizer)",
  )
  args = p.parse_args()
  if args.real_prompts < max(args.real_batches):
    p.error("--real_prompts must be at least the largest of --real_batches (every slot busy)")
  if args.tensor_parallel * args.data_parallel > jax.device_count():
    p.error(
        f"--tensor_parallel {args.tensor_parallel} x --data_parallel {args.data_parallel} = "
        f"{args.tensor_parallel * args.data_parallel} chips; this machine has "
        f"{jax.device_count()}"
    )
  slot_counts = {
      "synthetic": args.batches,
      "real": args.real_batches,
      "both": args.batches + args.real_batches,
  }[args.workload]
  if any(b % args.data_parallel for b in slot_counts):
    p.error(f"every slot count of the {args.workload} workload must divide by --data_parallel")
  if args.save_prompts:
    from synthjax import storage

    ids = embedded_prompts(args.real_prompts)
    storage.write_text(args.save_prompts, json.dumps(ids))  # whole or not at all
    print(f"{len(ids)} prompts, {sum(map(len, ids))} tokens, written to {args.save_prompts}")
    return
  args.torch_dtype = "float32" if args.weights == "float32" else "bfloat16"
  from synthjax import compile_cache

  compile_cache.enable()  # a second run on the same machine reads its programs back
  from synthjax import assets
  from synthjax.models.flops import decode_flops_per_token

  mesh = engine_mesh(args.tensor_parallel, args.data_parallel)
  if args.random_preset:
    model = random_model(args.random_preset, mesh, args.weights)
    name = f"{args.random_preset} (random weights, {args.weights})"
  else:
    from synthjax.checkpoints import store
    from synthjax.generate.job import resolve_generator

    model_dir = resolve_generator(assets.EMBEDDED_GENERATOR)
    cfg = store.load_config(model_dir)
    model = (cfg, store.load_params(model_dir, cfg))
    name = f"SmolLM2-135M-Instruct ({args.weights})"
  if args.weights != "float32" and not args.random_preset:
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
    real_workload(args, model, name, peak, mesh)
  if args.workload == "real":
    return
  print(f"{name}, {args.prompt_len}-token prompts, {args.new_tokens} new tokens, greedy")
  figures = {}  # "batch B" -> tokens/s of synthjax and transformers
  chips = mesh.size
  for batch in args.batches:
    line, row = f"batch {batch:3d}:", figures.setdefault(f"batch {batch}", {})
    for attention in args.decode_attention:  # side by side; the last is compared below
      ours, cfg = synthjax_tps(
          model,
          batch,
          args.prompt_len,
          args.new_tokens,
          decode_steps=args.decode_steps,
          prefill_batch=args.prefill_batch[-1],
          cache_dtype=args.kv_cache,
          mesh=mesh,
          decode_attention=attention,
      )
      roof = ours * decode_flops_per_token(cfg) / (peak * chips)
      line += (
          f" synthjax ({attention or 'default'} attention) {ours:7.1f} tok/s, "
          f"{ours / chips:.1f} per chip ({roof:.1%} of roofline) |"
      )
      row[f"{attention or 'default'} attention"] = {"tokens_per_s": ours, "of_roofline": roof}
    line = line.rstrip(" |")
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
