"""Launchers' dry runs print exactly these commands; the paper preset expands and validates."""
import dataclasses
import subprocess
import sys

import pytest

from synthjax import gin_cli, launchers
from synthjax.study_config import StudyConfig

JOB = launchers.Job("micro_s-2048-natural-rephrased_hq050", "synthjax.train",
                    ["train/base.gin", "models/micro_s.gin"],
                    ["MODEL_DIR = \"gs://b/runs/r1\"", "TRAIN_TOKENS = 2048"])
TRAIN = ("python3 -m synthjax.train --gin_file=train/base.gin --gin_file=models/micro_s.gin "
         "'--gin_bindings=MODEL_DIR = \"gs://b/runs/r1\"' '--gin_bindings=TRAIN_TOKENS = 2048'")
ONE_HOST = dataclasses.replace(JOB, name="vocab", all_hosts=False)


def test_local_script_runs_one_process_or_joins_several_over_loopback():
  assert launchers.local_script(JOB) == "set -euo pipefail\n" + TRAIN + "\n"
  lines = launchers.local_script(JOB, processes=2).splitlines()
  assert lines[7] == "trap 'exit 1' USR1  # a line failed"
  assert lines[8].startswith("port=$(python3 -c ")  # a free port, picked when the job starts
  assert lines[9:] == [
      f"{{ SYNTHJAX_COORDINATOR=127.0.0.1:$port SYNTHJAX_NUM_PROCESSES=2 SYNTHJAX_PROCESS_ID={i} "
      f"{TRAIN}; }} || kill -USR1 $$ &" if j == 0 else "pids+=($!)"
      for i in range(2) for j in range(2)] + ["wait"]
  assert launchers.local_script(ONE_HOST, processes=2).count("python3 -m synthjax.train") == 1


def test_tpu_vm_script_deletes_the_vm_on_every_path():
  script = launchers.tpu_vm_script(JOB, name="sj1", zone="us-central2-b", accelerator="v4-64")
  ssh_train = ("gcloud compute tpus tpu-vm ssh sj1 --worker=all --zone=us-central2-b "
               "'--command=cd synthjax && python3 -m pip install -q -e . "
               "'\"'\"'jax[tpu]==0.10.2'\"'\"' && " + TRAIN.replace("'", "'\"'\"'") + "'")
  assert script.splitlines() == [
      "set -euo pipefail",
      "delete_vm() { gcloud compute tpus tpu-vm delete sj1 --quiet --zone=us-central2-b "
      "|| true; }",
      "trap delete_vm EXIT",  # set before the VM exists: no path leaves it running
      "trap 'exit 143' TERM",
      "trap 'exit 130' INT",
      "gcloud compute tpus tpu-vm create sj1 --accelerator-type=v4-64 "
      "--version=tpu-ubuntu2204-base --zone=us-central2-b",
      "gcloud compute tpus tpu-vm scp --recurse --worker=all . 'sj1:~/synthjax' "
      "--zone=us-central2-b",
      ssh_train,  # every worker at once; the run writes its record to the bucket
  ]
  one = launchers.tpu_vm_script(ONE_HOST, name="sj2", zone="z", accelerator="v4-8")
  assert "tpu-vm ssh sj2 --worker=0 " in one
  queued = launchers.tpu_vm_script(JOB, name="sj1", zone="z", accelerator="v5p-128",
                                   queued=True).splitlines()
  assert queued[1] == ("delete_vm() { gcloud compute tpus queued-resources delete sj1 --force "
                       "--quiet --zone=z || true; }")
  assert queued[5] == ("gcloud compute tpus queued-resources create sj1 --node-id=sj1 "
                       "--accelerator-type=v5p-128 --runtime-version=tpu-ubuntu2204-base "
                       "--zone=z")
  assert queued[6].startswith("until gcloud compute tpus queued-resources describe sj1 ")


def test_gpu_script_starts_every_host_before_waiting():
  lines = launchers.gpu_script(JOB, hosts=["h0", "h1"], gpus_per_host=2).splitlines()
  remote = TRAIN.replace("'", "'\"'\"'")
  starts = [f"{{ ssh -tt h{i} 'cd synthjax && SYNTHJAX_COORDINATOR=h0:12355 "
            f"SYNTHJAX_NUM_PROCESSES=2 SYNTHJAX_PROCESS_ID={i} CUDA_VISIBLE_DEVICES=0,1 "
            f"{remote}'; }} || kill -USR1 $$ &" for i in range(2)]
  assert lines[8:] == [starts[0], "pids+=($!)", starts[1], "pids+=($!)", "wait"]
  assert lines[4] == "trap stop_all EXIT"
  one = launchers.gpu_script(ONE_HOST, hosts=["h0", "h1"])
  assert "ssh -tt h0 " in one and "ssh -tt h1 " not in one


def _fake_cli(tmp_path, fail_on=""):
  """gcloud, gsutil and ssh stand-ins on PATH that log each call (no cloud here) and fail on
  a call containing `fail_on`: what the scripts' control flow is tested against."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(parents=True)
  log = tmp_path / "calls.log"
  for tool in ("gcloud", "gsutil", "ssh"):
    (bin_dir / tool).write_text(
        f"#!/usr/bin/env bash\necho \"{tool} $*\" >> {log}\n"
        + (f"case \"$*\" in *\"{fail_on}\"*) exit 3;; esac\n" if fail_on else "")
        + ("exec sleep 30\n" if tool == "ssh" else ""))
    (bin_dir / tool).chmod(0o755)
  env = dict(__import__("os").environ, PATH=f"{bin_dir}:" + __import__("os").environ["PATH"])
  return env, log


def test_tpu_vm_script_deletes_the_vm_when_a_step_fails(tmp_path):
  script = launchers.tpu_vm_script(JOB, name="sj1", zone="z", accelerator="v4-8")
  for i, failing in enumerate(("tpu-vm create", "scp", "ssh sj1")):
    env, log = _fake_cli(tmp_path / f"case{i}", failing)
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    calls = log.read_text().splitlines()
    assert proc.returncode == 3
    assert calls[0].startswith("gcloud compute tpus tpu-vm create sj1")
    assert len(calls) == 2 + i  # the steps up to the failing one, in order, then the delete
    assert calls[-1] == "gcloud compute tpus tpu-vm delete sj1 --quiet --zone=z"


def test_gpu_script_stops_the_other_hosts_when_one_fails(tmp_path):
  import time
  env, log = _fake_cli(tmp_path, "SYNTHJAX_PROCESS_ID=1")  # host 1 fails, host 0 would wait
  script = launchers.gpu_script(JOB, hosts=["h0", "h1"])
  t = time.time()
  proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 1 and time.time() - t < 20  # not the 30 s host 0 would take
  assert "SYNTHJAX_PROCESS_ID=1" in log.read_text()


def test_paper_preset_walks_every_stage_as_cluster_jobs_in_a_dry_run():
  from synthjax import study
  gin_cli.parse(["study/paper.gin"])
  cfg = StudyConfig()
  cfg.validate(dry_run=True)
  # 4 sizes x 6 budgets x (7 HQ shares + 3 QA + 3 textbook, natural counted once) mixtures,
  # served by one run per (size, mixture) with a cooldown branch per smaller budget
  assert len(cfg.mixtures()) == 7 + 3 + 3 and len(cfg.jobs()) == 4 * 6 * 13
  jobs = study.train_jobs(cfg, study._paths(cfg), dry_run=True)
  assert len(jobs) == 4 * 13 and all(len(j.records) == 6 for j in jobs)
  assert {j.gin_files[1] for j in jobs} == {f"models/paper_{s}.gin"
                                            for s in ("100m", "300m", "1b", "3b")}
  # every launched job registers its data and evaluates every domain
  bindings = "\n".join(jobs[0].bindings)
  assert "MixtureLoader.register = @register_study_data" in bindings
  assert all(f'"{d}": @{d}/EvalSet' in bindings for d in cfg.eval_domains)
  proc = subprocess.run([sys.executable, "-m", "synthjax.study", "--gin_file=study/paper.gin",
                         "--launcher=gpu", "--hosts=h0,h1", "--dry_run", "--parallel=8"],
                        capture_output=True, text=True, check=True)
  out = proc.stdout.splitlines()
  assert out[0].startswith(f"cost: {4 * 6 * 13} runs, one per budget: ")
  stages = [l.split(":")[0] for l in out if l.startswith("stage ")]
  assert stages == ["stage vocab", "stage generate", "stage tokenize", "stage train",
                    "stage analyze"]  # in order; c4 needs no corpus stage
  assert "stage train: 52 jobs on gpu, 8 at once, 2 retries each" in proc.stdout
  starts = [l for l in out if l.startswith("{ ssh -tt h")]
  # one host for vocab, tokenize and analyze; both hosts for generate and each train job
  assert len(starts) == 3 + 2 + 2 * 52 and all(
      l.endswith("'; } || kill -USR1 $$ &") for l in starts)


def test_the_paper_grid_cost_is_6ND_plus_attention_with_and_without_branches():
  from synthjax.models.config import ModelConfig
  from synthjax.models.flops import param_count
  gin_cli.parse(["study/paper.gin"])
  cfg = StudyConfig()
  cost = launchers.grid_cost(cfg, cfg.train_gin)
  six_nd = six_nd_branched = 0.0
  for j in cfg.jobs():
    gin_cli.parse([f"models/{j['size']}.gin"], [f"ModelConfig.V = {cfg.vocab_size}"])
    six_nd += 6 * param_count(ModelConfig()) * j["budget"]
    six_nd_branched += 6 * param_count(ModelConfig()) * j["budget"] * (
        1.0 if j["budget"] == max(cfg.budgets) else 0.2)
  assert cost["jobs"] == 312 and cost["tokens"] == 4 * 13 * sum(cfg.budgets)
  assert 1.0 < cost["flops"] / six_nd < 1.3  # attention scores at 2,048 tokens add the rest
  assert cost["flops_branched"] / cost["flops"] == pytest.approx(six_nd_branched / six_nd)
  line = launchers.cost_line(cost, chip_tflops=275, mfu=0.4)
  hours = lambda f: f"{f / (275e12 * 0.4) / 3600:.3g} chip-hours"
  assert line.startswith("cost: 312 runs, one per budget: ")
  assert hours(cost["flops"]) in line and hours(cost["flops_branched"]) in line
  assert "52 runs with a cooldown branch per smaller budget" in line
