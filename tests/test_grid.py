"""A study's grid as jobs (grid.py): the paper preset expands and validates, its cost is 6ND
plus attention, and the Ray launcher's dry run plans every stage on the slice asked for and
checks memory on that slice, reaching no cluster."""

import subprocess
import sys

import pytest

from synthjax import gin_cli, grid
from synthjax.study_config import StudyConfig


def test_the_paper_preset_expands_into_its_training_jobs():
  from synthjax import plan

  gin_cli.parse(["study/paper.gin"])
  cfg = StudyConfig()
  cfg.validate(dry_run=True)
  # 4 sizes x 6 budgets x (7 HQ shares + 3 QA + 3 textbook, natural counted once) mixtures,
  # served by one run per (size, mixture) with a cooldown branch per smaller budget
  assert len(cfg.mixtures()) == 7 + 3 + 3 and len(cfg.jobs()) == 4 * 6 * 13
  jobs = plan.train_jobs(plan.Study(cfg, dry_run=True))
  assert len(jobs) == 4 * 13 and all(len(j.records) == 6 for j in jobs)
  assert {j.gin_files[1] for j in jobs} == {
      f"models/paper_{s}.gin" for s in ("100m", "300m", "1b", "3b")
  }
  # every launched job registers its data and evaluates every domain
  bindings = "\n".join(jobs[0].bindings)
  assert "MixtureLoader.register = @register_study_data" in bindings
  assert all(f'"{d}": @{d}/EvalSet' in bindings for d in cfg.eval_domains)


def test_a_dry_run_on_ray_plans_each_stage_on_the_slice_it_names():
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "synthjax.study",
          "--gin_file=study/paper.gin",
          "--launcher=ray",
          "--tpu_version=v5p",
          "--tpu_topology=2x2x4",
          "--dry_run",
      ],
      capture_output=True,
      text=True,
      check=True,
  )
  out = proc.stdout.splitlines()
  assert out[0].startswith(f"cost: {4 * 6 * 13} runs, one per budget: ")
  # the memory check uses the slice the runs will hold: v5p 2x2x4 is 16 chips of 95 GB
  memory = [l for l in out if l.startswith("memory: ")]
  assert len(memory) == 4 and all(" on v5p 2x2x4 " in l for l in memory), memory
  stages = [l for l in out if l.startswith("stage ")]
  assert stages == [
      "stage vocab: on the head node",
      "stage generate: on accelerator hosts",
      "stage tokenize: on the head node",
      "stage train: on slices of TPU v5p 2x2x4 (4 hosts), 52 runs",
      "stage analyze: on the head node",
  ]  # in order; c4 needs no corpus stage


def test_the_paper_grid_cost_is_6ND_plus_attention_with_and_without_branches():
  from synthjax.models.config import ModelConfig
  from synthjax.models.flops import param_count

  gin_cli.parse(["study/paper.gin"])
  cfg = StudyConfig()
  cost = grid.grid_cost(cfg, cfg.train_gin)
  six_nd = six_nd_branched = 0.0
  for j in cfg.jobs():
    gin_cli.parse([f"models/{j['size']}.gin"], [f"ModelConfig.V = {cfg.vocab_size}"])
    six_nd += 6 * param_count(ModelConfig()) * j["budget"]
    six_nd_branched += (
        6
        * param_count(ModelConfig())
        * j["budget"]
        * (1.0 if j["budget"] == max(cfg.budgets) else 0.2)
    )
  assert cost["jobs"] == 312 and cost["tokens"] == 4 * 13 * sum(cfg.budgets)
  assert 1.0 < cost["flops"] / six_nd < 1.3  # attention scores at 2,048 tokens add the rest
  assert cost["flops_branched"] / cost["flops"] == pytest.approx(six_nd_branched / six_nd)
  line = grid.cost_line(cost, chip_tflops=275, mfu=0.4)
  hours = lambda f: f"{f / (275e12 * 0.4) / 3600:.3g} chip-hours"
  assert line.startswith("cost: 312 runs, one per budget: ")
  assert hours(cost["flops"]) in line and hours(cost["flops_branched"]) in line
  assert "52 runs with a cooldown branch per smaller budget" in line


def test_every_stage_the_config_accepts_is_one_the_study_runs_in_order():
  from synthjax import study, study_config

  assert tuple(study.STAGES) == study_config.STAGES
