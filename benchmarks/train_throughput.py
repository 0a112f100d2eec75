"""Training throughput: synthjax vs a PyTorch transformers Llama step of the same shape.

    python benchmarks/train_throughput.py [--steps 5] [--batch 8] [--seq 256]
    python benchmarks/train_throughput.py --model paper_1b --dtype bfloat16 --batch 8 \
        --seq 2048 --attention auto --remat save_dots --peak_tflops 989 --skip_torch  # a GPU

Prints, from one run: the matmul peak in --dtype measured in the run, the better of XLA's and
torch's (or the datasheet's, --peak_tflops), synthjax tokens/s and MFU (model FLOPs: 6 per
matmul parameter plus attention, per token, over that peak), torch tokens/s at 1 and 2 threads,
and the ratios. The default model is
gin_configs/models/bench_30m.gin (d 512, 8 layers, vocab 8192). Nothing here is asserted: the
machine is shared, so compare the ratios within one run.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import results  # benchmarks/, the folder of this script


def matmul_peak_flops(n=2048, repeats=7, dtype="float32") -> float:
  """XLA's n^3 matrix product rate; bf16 products accumulate in f32, as the model's do."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
  f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  f(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a, a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / statistics.median(times)


def torch_matmul_peak_flops(n=2048, repeats=7, threads=2, dtype="float32") -> float:
  import torch

  torch.set_num_threads(threads)
  a = torch.randn(n, n).to(getattr(torch, dtype))
  a @ a
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    a @ a
    times.append(time.perf_counter() - t)
  return 2 * n**3 / statistics.median(times)


def bench_config(args):
  from synthjax import gin_cli
  from synthjax.models.config import ModelConfig

  gin_cli.parse([f"models/{args.model}.gin"])
  return ModelConfig().replace(dtype=args.dtype, remat=args.remat)


def synthjax_tokens_per_s(cfg, batch, seq, steps) -> float:
  from synthjax import sharding
  from synthjax.models.llama import Transformer
  from synthjax.training import optimizer
  from synthjax.training.step import make_train_step

  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  rules = sharding.logical_axis_rules()
  model = Transformer(cfg)
  tx = optimizer.make(optimizer.OptimizerConfig())

  def init(rng):
    params = model.init(rng, jnp.zeros((1, seq), jnp.int32))["params"]
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  state, shardings = sharding.init_sharded(init, mesh, rules, jax.random.key(0))
  step = make_train_step(model, tx, shardings, sharding.batch_sharding(mesh), rules, mesh)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, cfg.V, (batch, seq + 1)).astype(np.int32)
  ones = np.ones((batch, seq), np.int32)
  data = {
      "inputs": tokens[:, :-1],
      "targets": tokens[:, 1:],
      "weights": ones,
      "segment_ids": ones,
      "positions": np.broadcast_to(np.arange(seq), (batch, seq)),
  }
  data = sharding.global_batch(data, mesh)
  state, m = step(state, data, 1e-3)  # compile
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = step(state, data, 1e-3)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return batch * seq / statistics.median(times)


def torch_tokens_per_s(cfg, batch, seq, steps, threads) -> float:
  import torch
  import transformers

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=cfg.V,
      hidden_size=cfg.D,
      intermediate_size=cfg.F,
      num_hidden_layers=cfg.L,
      num_attention_heads=cfg.H,
      num_key_value_heads=cfg.K,
      head_dim=cfg.Dh,
      max_position_embeddings=cfg.max_len,
      tie_word_embeddings=cfg.tie_embeddings,
      attn_implementation="sdpa",
  )
  model = transformers.LlamaForCausalLM(config)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
  x = torch.randint(0, cfg.V, (batch, seq + 1))

  def one_step():
    out = model(input_ids=x[:, :-1], labels=x[:, 1:].contiguous())
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

  one_step()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    one_step()
    times.append(time.perf_counter() - t)
  return batch * seq / statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--model", default="bench_30m", help="a preset in gin_configs/models")
  p.add_argument("--dtype", default="float32", help="compute dtype (weights stay f32)")
  p.add_argument(
      "--attention",
      default="auto,xla,blocked",
      help="ModelConfig.attention forms to time, comma-separated",
  )
  p.add_argument("--remat", default="none", help="ModelConfig.remat")
  p.add_argument(
      "--peak_tflops",
      type=float,
      default=0.0,
      help="the device's datasheet peak for --dtype; 0: measure an f32 matmul",
  )
  args = p.parse_args()
  from synthjax.models.flops import param_count, train_flops_per_token

  cfg = bench_config(args)
  n = param_count(cfg)
  flops_6n = 6 * n
  flops_full = train_flops_per_token(cfg, args.seq)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()})")
  print(
      f"model: {args.model}, N = {n / 1e6:.1f}M params, batch {args.batch}x{args.seq}, "
      f"{args.dtype}, {cfg.remat} remat"
  )
  if args.peak_tflops:
    peak = args.peak_tflops * 1e12
    print(f"peak (datasheet, {args.dtype}): {args.peak_tflops:g} TFLOP/s")
  else:
    peak = matmul_peak_flops(dtype=args.dtype)
    print(f"{args.dtype} matmul peak (2048^3, median), XLA: {peak / 1e9:.1f} GFLOP/s")
    if not args.skip_torch:  # the machine's peak is the better of the two libraries' products
      theirs = torch_matmul_peak_flops(dtype=args.dtype)
      print(
          f"{args.dtype} matmul peak (2048^3, median), torch 2 threads: "
          f"{theirs / 1e9:.1f} GFLOP/s"
      )
      peak = max(peak, theirs)
    print(f"MFU below is against {peak / 1e9:.1f} GFLOP/s")
  from synthjax.models import attention

  speeds = {}
  figures = {
      "model": args.model,
      "batch": f"{args.batch}x{args.seq}",
      "dtype": args.dtype,
      "peak_gflops": peak / 1e9,
      "tokens_per_s": speeds,
  }
  for form in dict.fromkeys(args.attention.split(",")):
    ours = synthjax_tokens_per_s(cfg.replace(attention=form), args.batch, args.seq, args.steps)
    speeds[form] = ours
    print(
        f"synthjax, {form} attention ({attention.resolve(form, dtype=cfg.dtype)}): "
        f"{ours:.0f} tokens/s, MFU "
        f"{ours * flops_full / peak:.1%} (6N_matmul + attention), "
        f"{ours * flops_6n / peak:.1%} (6N)"
    )
  figures["mfu"] = {form: s * flops_full / peak for form, s in speeds.items()}
  if not args.skip_torch:
    first = args.attention.split(",")[0]
    figures["torch_tokens_per_s"] = {}
    for threads in (1, 2):
      theirs = torch_tokens_per_s(cfg, args.batch, args.seq, args.steps, threads)
      figures["torch_tokens_per_s"][f"{threads} threads"] = theirs
      print(
          f"torch {threads} thread(s): {theirs:.0f} tokens/s, MFU "
          f"{theirs * flops_full / peak:.1%} (6N_matmul + attention); "
          f"synthjax ({first}) / torch = {speeds[first] / theirs:.2f}"
      )

  results.append("train_throughput", figures)


if __name__ == "__main__":
  main()
