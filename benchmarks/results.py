"""Benchmark results as data: each benchmark run appends one JSON line to
benchmarks/results/NAME.jsonl (when, at which commit, on what machine, the command and the
figures it printed), and

    python benchmarks/results.py

renders every file into benchmarks/results/README.md, the table the docs link to. Records are
only appended: the history of a figure is its file, read in order.
"""

import datetime
import glob
import json
import os
import platform
import subprocess
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _commit() -> str:
  """The checkout's commit, with '+changes' when its tracked files differ from it; for a copy
  without git (a working tree sent to an accelerator machine), BENCHMARK_COMMIT as given."""
  if os.environ.get("BENCHMARK_COMMIT"):
    return os.environ["BENCHMARK_COMMIT"]
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "."], cwd=os.path.dirname(here)
    ).returncode
  except OSError:
    return "unknown"
  return (head or "unknown") + ("+changes" if head and dirty else "")


def _script() -> str:
  """The script as run from the repository's root (no path of this machine in a record)."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.relpath(os.path.abspath(sys.argv[0]), repo)


def _machine() -> dict:
  import jax

  device = jax.devices()[0]
  return {
      "host": platform.node(),
      "cpus": os.cpu_count(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "device": f"{device.device_kind} x{jax.device_count()}",
  }


def append(name: str, figures: dict) -> str:
  """Record one run of benchmark `name`; returns the file it went to."""
  os.makedirs(RESULTS, exist_ok=True)
  record = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "commit": _commit(),
      "machine": _machine(),
      "command": " ".join(["python", _script(), *sys.argv[1:]]),
      "figures": figures,
  }
  path = os.path.join(RESULTS, f"{name}.jsonl")
  with open(path, "a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")
  print(f"recorded in {os.path.relpath(path)}", flush=True)
  return path


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  if isinstance(value, dict):
    return "; ".join(f"{k} {_cell(v)}" for k, v in value.items())
  return str(value).replace("|", "/")


def render() -> str:
  """Every benchmark's records as one Markdown table each, oldest first."""
  out = [
      "# Benchmark results",
      "",
      "Written by `python benchmarks/results.py` from the `*.jsonl` files beside it (one line",
      "per benchmark run). Figures of one run compare with each other; across runs, machines of",
      "one kind differ (see each record's machine). A commit marked (transcribed) is a run",
      "published in README.md with that commit before runs were recorded as data.",
  ]
  for path in sorted(glob.glob(os.path.join(RESULTS, "*.jsonl"))):
    with open(path) as f:
      records = [json.loads(line) for line in f if line.strip()]
    if not records:
      continue
    keys = list(dict.fromkeys(k for r in records for k in r["figures"]))
    out += ["", f"## {os.path.basename(path)[: -len('.jsonl')]}", ""]
    out.append("| date | commit | machine | command | " + " | ".join(keys) + " |")
    out.append("|" + "---|" * (4 + len(keys)))
    for r in records:
      m = r["machine"]
      machine = f"{m['device']}, {m['cpus']} CPUs, jax {m['jax']}"
      commit = r["commit"] + (" (transcribed)" if r.get("source") else "")
      cells = [r["date"][:10], commit, machine, f"`{r['command']}`"]
      cells += [_cell(r["figures"].get(k, "")) for k in keys]
      out.append("| " + " | ".join(cells) + " |")
  return "\n".join(out) + "\n"


if __name__ == "__main__":
  text = render()
  with open(os.path.join(RESULTS, "README.md"), "w") as f:
    f.write(text)
  print(f"wrote {os.path.join(RESULTS, 'README.md')}")
