"""Planning a training stream at corpus scale: seconds and resident memory of the loader's
plan (synthjax/data/plan.py, what every MixtureLoader runs at start) over made-up document
lengths.

    python benchmarks/plan_throughput.py [--documents 100000000] [--shares 0.67,0.33]

Prints the time and the peak resident memory of the process, and of the length arrays alone
(what a real run holds anyway), so the plan's own cost is the difference.
"""
import argparse
import resource
import time

import numpy as np


def peak_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: kilobytes


def main():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--documents", type=int, default=100_000_000)
  p.add_argument("--shares", default="0.67,0.33",
                 help="documents per component, as shares (natural first)")
  args = p.parse_args()
  from synthjax.data import plan
  rng = np.random.default_rng(0)
  shares = [float(x) for x in args.shares.split(",")]
  lengths = []
  for s in shares:  # c4-like: 20-800 tokens a document, drawn in chunks to keep int32
    n = int(args.documents * s)
    lengths.append(np.concatenate([rng.integers(20, 800, min(n - i, 10_000_000), np.int32)
                                   for i in range(0, n, 10_000_000)]))
  base = peak_gb()
  need = [int(x.sum()) for x in lengths]  # one pass over every component
  t = time.perf_counter()
  comp, doc, length = plan.plan_segments(lengths, need, seed=0)
  offsets = np.zeros(len(length) + 1, np.int64)
  np.cumsum(length, out=offsets[1:])
  seconds = time.perf_counter() - t
  print(f"planned {len(length):,} segments ({offsets[-1] / 1e9:.1f}B tokens, "
        f"{len(shares)} components) in {seconds:.1f} s; peak resident {peak_gb():.2f} GB "
        f"(the length arrays alone: {base:.2f} GB)")


if __name__ == "__main__":
  main()
