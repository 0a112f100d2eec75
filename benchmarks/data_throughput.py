"""Loader throughput: packed tokens/s of the Grain mixture loader on one core.

    python benchmarks/data_throughput.py [--seq 256] [--batch 8] [--batches 400]

Builds the embedded demo corpus and a 2048-piece vocabulary in a cache folder (once), then
times MixtureLoader batches of natural+rephrased mixture rows. Compare the printed figure with
benchmarks/train_throughput.py's tokens/s (the ratio is how far the loader outruns training).
"""

import argparse
import os
import time

import results  # benchmarks/, the folder of this script

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--seq", type=int, default=256)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--batches", type=int, default=400)
  p.add_argument("--work", default=os.path.expanduser("~/.cache/synthjax/bench_data"))
  p.add_argument(
      "--train_tokens_per_s",
      type=float,
      default=None,
      help="training tokens/s to compare with (from train_throughput.py)",
  )
  args = p.parse_args()
  os.environ["SYNTHJAX_CACHE"] = os.path.join(args.work, "cache")
  os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
  from synthjax.data import demo_corpus, loader, sources, tasks, tokenize, vocab

  corpus = os.path.join(args.work, "demo")
  demo_corpus.build(corpus)
  model = os.path.join(args.work, "vocab", "sp2k.model")
  if not os.path.exists(model):
    vocab.train_sentencepiece(
        (d["text"] for d in sources.read_documents(os.path.join(corpus, "natural_train.jsonl"))),
        2048,
        model[: -len(".model")],
    )
  voc = vocab.load_vocabulary(model)
  train = os.path.join(corpus, "natural_train.jsonl")
  tasks.register_task("natural", train, voc)
  tasks.register_task("rephrased_hq", train, voc)  # stands in for generated text here
  for name in ("natural", "rephrased_hq"):  # the loader reads tokenized copies (made once)
    tokenize.tokenize_serially(name)
  budget = args.batch * args.seq * args.batches
  src = loader.MixtureLoader(
      args.batch, args.seq, mixture="natural+rephrased_hq@0.33", budget=budget, threads=1
  )
  src.next_batch()
  t = time.perf_counter()
  for _ in range(args.batches - 1):
    src.next_batch()
  tps = (args.batches - 1) * args.batch * args.seq / (time.perf_counter() - t)
  print(
      f"loader: {tps:,.0f} packed tokens/s on one core "
      f"(batch {args.batch}x{args.seq}, mixture natural+rephrased_hq@0.33)"
  )
  figures = {"batch": f"{args.batch}x{args.seq}", "loader_tokens_per_s": tps}
  if args.train_tokens_per_s:
    print(
        f"ratio to training ({args.train_tokens_per_s:,.0f} tokens/s): "
        f"{tps / args.train_tokens_per_s:,.0f}x"
    )
    figures["ratio_to_training"] = tps / args.train_tokens_per_s
  results.append("data_throughput", figures)


if __name__ == "__main__":
  main()
