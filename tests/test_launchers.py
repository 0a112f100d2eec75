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


def test_local_commands():
  assert launchers.local_commands([JOB], "out") == [
      TRAIN.format(dir="out/micro_s-2048-natural-rephrased_hq050")]
  [line] = launchers.local_commands([JOB, JOB], "out", parallel=2)
  assert line.endswith("| xargs -P 2 -I CMD sh -c CMD")


def test_tpu_vm_commands():
  lines = launchers.tpu_vm_commands(JOB, name="sj1", zone="us-central2-b",
                                    accelerator="v4-64", bucket="gs://b/sj")
  model_dir = "gs://b/sj/runs/micro_s-2048-natural-rephrased_hq050"
  assert lines == [
      "gcloud compute tpus tpu-vm create sj1 --accelerator-type=v4-64 "
      "--version=tpu-ubuntu2204-base --zone=us-central2-b",
      "gcloud compute tpus tpu-vm scp --recurse --worker=all . 'sj1:~/synthjax' "
      "--zone=us-central2-b",
      "gcloud compute tpus tpu-vm ssh sj1 --worker=all --zone=us-central2-b "
      "'--command=cd synthjax && python3 -m pip install -q -e . '\"'\"'jax[tpu]==0.10.2'\"'\"' "
      "&& " + TRAIN.format(dir=model_dir) + "'",
      f"gsutil -m cp -r {model_dir}/run.json "
      "gs://b/sj/records/micro_s-2048-natural-rephrased_hq050.json",
      "gcloud compute tpus tpu-vm delete sj1 --quiet --zone=us-central2-b",
  ]
  queued = launchers.tpu_vm_commands(JOB, name="sj1", zone="z", accelerator="v5p-128",
                                     bucket="gs://b", queued=True)
  assert queued[0] == ("gcloud compute tpus queued-resources create sj1 --node-id=sj1 "
                       "--accelerator-type=v5p-128 --runtime-version=tpu-ubuntu2204-base "
                       "--zone=z")


def test_gpu_commands_set_up_jax_distributed():
  lines = launchers.gpu_commands(JOB, hosts=["h0", "h1"], out_root="/o", gpus_per_host=2)
  train = TRAIN.format(dir="/o/micro_s-2048-natural-rephrased_hq050")
  assert lines == [
      f"ssh h{i} 'cd synthjax && SYNTHJAX_COORDINATOR=h0:12355 SYNTHJAX_NUM_PROCESSES=2 "
      f"SYNTHJAX_PROCESS_ID={i} CUDA_VISIBLE_DEVICES=0,1 {train}'" for i in range(2)]


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
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 2 * len(jobs) and all(l.startswith("ssh h") for l in lines)
