"""Launchers' dry runs print exactly these commands; the paper preset expands and validates."""
import subprocess
import sys

from synthjax import gin_cli, launchers
from synthjax.study_config import StudyConfig

JOB = launchers.Job("micro_s-2048-natural-rephrased_hq050",
                    ["train/base.gin", "models/micro_s.gin"],
                    ["TRAIN_TOKENS=2048", "MixtureLoader.mixture=natural+rephrased_hq@0.50"])
TRAIN = ("python3 -m synthjax.train --gin_file=train/base.gin --gin_file=models/micro_s.gin "
         "--gin.MODEL_DIR={dir} --gin.TRAIN_TOKENS=2048 "
         "--gin.MixtureLoader.mixture=natural+rephrased_hq@0.50")


def test_local_script():
  assert launchers.local_script(JOB, "out") == (
      "set -euo pipefail\n" + TRAIN.format(dir="out/micro_s-2048-natural-rephrased_hq050") + "\n")


def test_tpu_vm_script_deletes_the_vm_on_every_path():
  script = launchers.tpu_vm_script(JOB, name="sj1", zone="us-central2-b", accelerator="v4-64",
                                   bucket="gs://b/sj")
  model_dir = "gs://b/sj/runs/micro_s-2048-natural-rephrased_hq050"
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
      "gcloud compute tpus tpu-vm ssh sj1 --worker=all --zone=us-central2-b "
      "'--command=cd synthjax && python3 -m pip install -q -e . '\"'\"'jax[tpu]==0.10.2'\"'\"' "
      "&& " + TRAIN.format(dir=model_dir) + "'",
      f"gsutil -m cp {model_dir}/run.json "
      "gs://b/sj/records/micro_s-2048-natural-rephrased_hq050.json",
  ]
  queued = launchers.tpu_vm_script(JOB, name="sj1", zone="z", accelerator="v5p-128",
                                   bucket="gs://b", queued=True).splitlines()
  assert queued[1] == ("delete_vm() { gcloud compute tpus queued-resources delete sj1 --force "
                       "--quiet --zone=z || true; }")
  assert queued[5] == ("gcloud compute tpus queued-resources create sj1 --node-id=sj1 "
                       "--accelerator-type=v5p-128 --runtime-version=tpu-ubuntu2204-base "
                       "--zone=z")
  assert queued[6].startswith("until gcloud compute tpus queued-resources describe sj1 ")


def test_gpu_script_starts_every_host_before_waiting():
  lines = launchers.gpu_script(JOB, hosts=["h0", "h1"], out_root="/o",
                               gpus_per_host=2).splitlines()
  train = TRAIN.format(dir="/o/micro_s-2048-natural-rephrased_hq050")
  starts = [f"ssh -tt h{i} 'cd synthjax && SYNTHJAX_COORDINATOR=h0:12355 "
            f"SYNTHJAX_NUM_PROCESSES=2 SYNTHJAX_PROCESS_ID={i} CUDA_VISIBLE_DEVICES=0,1 "
            f"{train}' &" for i in range(2)]
  assert lines[7:] == [starts[0], "pids+=($!)", starts[1], "pids+=($!)",
                       'for _ in "${pids[@]}"; do wait -n || exit 1; done']
  assert lines[4] == "trap stop_hosts EXIT"


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
  script = launchers.tpu_vm_script(JOB, name="sj1", zone="z", accelerator="v4-8",
                                   bucket="gs://b")
  for i, failing in enumerate(("scp", "ssh sj1", "cp gs://")):
    env, log = _fake_cli(tmp_path / f"case{i}", failing)
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    calls = log.read_text().splitlines()
    assert proc.returncode == 3
    assert calls[0].startswith("gcloud compute tpus tpu-vm create sj1")
    assert calls[-1] == "gcloud compute tpus tpu-vm delete sj1 --quiet --zone=z"


def test_gpu_script_stops_the_other_hosts_when_one_fails(tmp_path):
  import time
  env, log = _fake_cli(tmp_path, "SYNTHJAX_PROCESS_ID=1")  # host 1 fails, host 0 would wait
  script = launchers.gpu_script(JOB, hosts=["h0", "h1"], out_root="/o")
  t = time.time()
  proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 1 and time.time() - t < 20  # not the 30 s host 0 would take
  assert "SYNTHJAX_PROCESS_ID=1" in log.read_text()


def test_paper_preset_expands_to_the_full_grid_and_dry_runs():
  gin_cli.parse(["study/paper.gin"])
  cfg = StudyConfig()
  cfg.validate(dry_run=True)
  jobs = launchers.study_jobs(cfg)
  # 4 sizes x 7 budgets x (7 HQ shares + 3 QA + 3 textbook, natural counted once) mixtures
  assert len(cfg.mixtures()) == 7 + 3 + 3
  assert len(jobs) == 4 * 7 * 13
  assert {j.gin_files[1] for j in jobs} == {f"models/paper_{s}.gin"
                                            for s in ("100m", "300m", "1b", "3b")}
  proc = subprocess.run([sys.executable, "-m", "synthjax.launchers", "--gin_file=study/paper.gin",
                         "--launcher=gpu", "--hosts=h0,h1", "--dry_run"], capture_output=True,
                        text=True, check=True)
  starts = [l for l in proc.stdout.splitlines() if l.startswith("ssh -tt h")]
  assert len(starts) == 2 * len(jobs) and all(l.endswith("' &") for l in starts)
  head = proc.stdout.splitlines()[:2]
  assert head[0].startswith(f"cost: {len(jobs)} jobs, ")
  assert head[1].startswith(f"sweep: {len(jobs)} jobs on gpu, 1 at once, 2 retries each")


def test_the_paper_grid_cost_is_6ND_plus_attention():
  from synthjax.models.config import ModelConfig
  from synthjax.models.flops import param_count
  gin_cli.parse(["study/paper.gin"])
  cfg = StudyConfig()
  cost = launchers.grid_cost(cfg, cfg.train_gin)
  six_nd = 0.0
  for j in cfg.jobs():
    gin_cli.parse([f"models/{j['size']}.gin"], [f"ModelConfig.V = {cfg.vocab_size}"])
    six_nd += 6 * param_count(ModelConfig()) * j["budget"]
  assert cost["jobs"] == 364 and cost["tokens"] == 4 * 13 * sum(cfg.budgets)
  assert 1.0 < cost["flops"] / six_nd < 1.3  # attention scores at 2,048 tokens add the rest
  line = launchers.cost_line(cost, chip_tflops=275, mfu=0.4)
  hours = cost["flops"] / (275e12 * 0.4) / 3600
  assert line.startswith("cost: 364 jobs, ") and f"{hours:.3g} chip-hours at 40% MFU" in line

