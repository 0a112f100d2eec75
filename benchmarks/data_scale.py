"""Data at scale, in one run: the loader's stream plan over 1M, 10M and 100M documents, and
tokenization throughput of the Beam pipeline (1 and 2 workers) beside the single-process loop.

    python benchmarks/data_scale.py [--documents 1e6,1e7,1e8] [--shards 8]

Plan: the real TokenStream (plan.py + offsets, what every host builds at every start) over
made-up c4-like lengths (20-800 tokens a document, two components at 2/3 and 1/3 of the
documents), each size in a fresh process so its resident memory is its own. Printed: seconds,
the peak resident size, and the bytes per document the plan keeps once built (beyond the
length arrays, which a run holds anyway).

Tokenization: the embedded corpus's natural training text, --repeat times over (1.4M tokens
each), split into --shards files, and a 2,048-piece vocabulary; each way makes a fresh tokenized copy. Printed: documents/s, tokens/s
and the ratio to the single-process loop; the copies' batches are checked to be equal.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _resident_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Lengths:
  """A component with only its document lengths: all the plan reads."""

  def __init__(self, name, lengths):
    self.name, self.lengths = name, lengths


def plan_child(documents: int) -> dict:
  from synthjax.data.loader import TokenStream

  rng = np.random.default_rng(0)
  components = []
  for name, share in (("natural", 2 / 3), ("synthetic", 1 / 3)):
    n = int(documents * share)
    components.append(
        _Lengths(
            name,
            np.concatenate(
                [
                    rng.integers(20, 800, min(n - i, 10_000_000), np.int32)
                    for i in range(0, n, 10_000_000)
                ]
            ),
        )
    )
  tokens = [int(c.lengths.sum()) for c in components]
  total = sum(tokens)
  before = _resident_bytes()
  t = time.perf_counter()
  stream = TokenStream(
      components, [x / total for x in tokens], total, seed=0, allow_repeat=True
  )  # a share rounded up by one token may repeat
  seconds = time.perf_counter() - t
  kept = _resident_bytes() - before
  return {
      "documents": sum(len(c.lengths) for c in components),
      "tokens": stream.total,
      "seconds": seconds,
      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
      "kept_bytes_per_document": kept / sum(len(c.lengths) for c in components),
  }


def plan_rows(sizes):
  rows = []
  for n in sizes:
    out = subprocess.run(
        [sys.executable, __file__, "--plan_child", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    r = rows[-1]
    print(
        f"plan {r['documents']:>12,} documents ({r['tokens'] / 1e9:6.1f}B tokens): "
        f"{r['seconds']:6.1f} s, peak resident {r['peak_gb']:5.2f} GB, "
        f"{r['kept_bytes_per_document']:4.1f} bytes/document kept",
        flush=True,
    )
  return rows


def tokenize_rows(work: str, shards: int, repeat: int):
  from synthjax.data import demo_corpus, loader, sources, tasks, token_cache, tokenize, vocab

  corpus = os.path.join(work, "demo")
  demo_corpus.build(corpus)
  texts = [d["text"] for d in sources.read_documents(os.path.join(corpus, "natural_train.jsonl"))]
  vocab_texts, texts = texts, texts * repeat
  os.makedirs(os.path.join(work, "parts"), exist_ok=True)
  for i in range(shards):
    with open(os.path.join(work, "parts", f"part{i:03d}.jsonl"), "w") as f:
      f.writelines(json.dumps({"text": t}) + "\n" for t in texts[i::shards])
  model = vocab.train_sentencepiece(vocab_texts, 2048, os.path.join(work, "sp2k"))
  tasks.register_task(
      "bench_natural", os.path.join(work, "parts", "*.jsonl"), vocab.load_vocabulary(model)
  )
  ways = {
      "single-process loop": None,
      "Beam, 1 worker": [
          "--runner=DirectRunner",
          "--direct_num_workers=1",
          "--direct_running_mode=in_memory",
      ],
      "Beam, 2 workers": [
          "--runner=DirectRunner",
          "--direct_num_workers=2",
          "--direct_running_mode=multi_processing",
      ],
  }
  rows, batches = {}, {}
  for way, options in ways.items():
    os.environ["SYNTHJAX_CACHE"] = os.path.join(work, "cache", way.replace(" ", "_"))
    t = time.perf_counter()
    if options is None:
      tokenize.tokenize_serially("bench_natural")
    else:
      tokenize.tokenize(["bench_natural"], options)
    seconds = time.perf_counter() - t
    stats = token_cache.stats("bench_natural")
    rows[way] = {
        "seconds": seconds,
        "documents_per_s": stats["documents"] / seconds,
        "tokens_per_s": stats["tokens"] / seconds,
        **stats,
    }
    src = loader.MixtureLoader(8, 128, mixture="bench_natural", budget=8 * 128 * 20)
    batches[way] = [src.next_batch()["inputs"] for _ in range(src.steps)]
  base = rows["single-process loop"]["tokens_per_s"]
  for way, r in rows.items():
    print(
        f"tokenize ({way:>19}): {r['documents']:,} documents, {r['tokens']:,} tokens in "
        f"{r['seconds']:5.1f} s: {r['documents_per_s']:7,.0f} documents/s, "
        f"{r['tokens_per_s']:9,.0f} tokens/s, {r['tokens_per_s'] / base:4.2f}x the loop",
        flush=True,
    )
  same = all(
      np.array_equal(a, b)
      for way in batches
      for a, b in zip(batches["single-process loop"], batches[way])
  )
  print(f"tokenize: the three copies give {'the same' if same else 'DIFFERENT'} batches")
  return rows


def main():
  p = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--documents", default="1e6,1e7,1e8")
  p.add_argument("--shards", type=int, default=8)
  p.add_argument("--repeat", type=int, default=4)
  p.add_argument("--skip_tokenize", action="store_true")
  p.add_argument("--plan_child", type=int, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.plan_child:
    print(json.dumps(plan_child(args.plan_child)))
    return
  print(f"{os.cpu_count()} cores", flush=True)
  plans = plan_rows([int(float(x)) for x in args.documents.split(",")])
  figures = {
      f"plan {r['documents']:.0e} docs": {"s": r["seconds"], "peak_gb": r["peak_gb"]} for r in plans
  }
  if not args.skip_tokenize:
    with tempfile.TemporaryDirectory() as work:
      for way, r in tokenize_rows(work, args.shards, args.repeat).items():
        figures[f"tokenize {way} tokens/s"] = r["tokens_per_s"]
  from results import append  # benchmarks/, the folder of this script

  append("data_scale", figures)


if __name__ == "__main__":
  main()
