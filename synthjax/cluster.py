"""A study on a cluster: every stage as jobs through a launcher backend, in order.

    python -m synthjax.study --gin_file=study/paper.gin --launcher=tpu_vm \
        --tpu_zone=us-central2-b --tpu_type=v4-64 --parallel=16 --retries=2 [--dry_run]

First the grid's cost, then each stage of StudyConfig.stages as a sweep (sweep.py) of jobs
(launchers.py): corpus, vocab, tokenize and analyze are one job on one host running
`python -m synthjax.study` for that stage; generate is one job on every host of the backend,
each host taking its own part of the corpus; train is one `python -m synthjax.train` job per
run of the grid (study.train_job, the definition the in-process study uses too), each on every
host. Every stage skips what is done, so rerunning the command resumes the study; a stage with
a failed job (after its retries) stops the walk with the job's log. The study's folder is
where every job reads and writes (a bucket for TPU VMs): the analysis collects the run
records from it.
"""
import argparse
import dataclasses
import os
from typing import List, Sequence

from synthjax import launchers, study, sweep
from synthjax.errors import ArgumentParser, UserError
from synthjax.training import memory


def parser() -> argparse.ArgumentParser:
  p = ArgumentParser(prog="python -m synthjax.study", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--launcher", choices=("local", "tpu_vm", "gpu"), required=True)
  p.add_argument("--dry_run", action="store_true", help="print each stage's job scripts only")
  p.add_argument("--status", action="store_true", help="print the sweeps' state only")
  p.add_argument("--parallel", type=int, default=1, help="jobs at once")
  p.add_argument("--retries", type=int, default=2, help="further attempts of a failed job")
  p.add_argument("--status_dir", default="sweep", help="each stage's job states and logs")
  p.add_argument("--processes", type=int, default=1,
                 help="local: processes per job, joined over loopback")
  p.add_argument("--tpu_zone", default="")
  p.add_argument("--tpu_type", default="v4-8")
  p.add_argument("--tpu_queued", action="store_true")
  p.add_argument("--hosts", default="", help="comma-separated GPU hosts")
  p.add_argument("--chip_tflops", type=float, default=275.0,
                 help="peak bf16 TFLOP/s of one chip, for the cost line (TPU v4: 275)")
  p.add_argument("--mfu", type=float, default=0.4, help="assumed MFU, for the cost line")
  return p


def stage_jobs(stage: str, cfg, gin_files: Sequence[str], bindings: Sequence[str],
               dry_run: bool) -> List[launchers.Job]:
  if stage == "train":
    return study.train_jobs(cfg, study._paths(cfg), dry_run)
  # The study's settings, keyed into the job: a sweep reruns a done job whose script changed.
  key = study._key(dataclasses.asdict(cfg))
  return [launchers.Job(stage, "synthjax.study", list(gin_files),
                        [*bindings, f'StudyConfig.stages = ["{stage}"]', f"# settings {key}"],
                        all_hosts=stage == "generate")]


def run(cfg, args, gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  if not (0 < args.mfu <= 1 and args.chip_tflops > 0):
    raise UserError(f"--mfu must be in (0, 1] and --chip_tflops positive, got {args.mfu} and "
                    f"{args.chip_tflops}")
  if args.processes < 1:
    raise UserError(f"--processes must be at least 1, got {args.processes}")
  if args.status:
    for stage in cfg.stages:
      print(f"# {stage}\n{sweep.status_table(os.path.join(args.status_dir, stage))}")
    return
  cfg.validate(dry_run=args.dry_run)
  print(launchers.cost_line(launchers.grid_cost(cfg, cfg.train_gin), args.chip_tflops,
                            args.mfu), flush=True)
  plans = launchers.grid_memory(cfg, cfg.train_gin)
  for size, plan in plans.items():
    print(launchers.memory_line(size, plan), flush=True)
  for plan in plans.values():
    memory.require_fit(plan)  # before any job is started
  sweep.Sweep(args.status_dir, args.parallel, args.retries)  # checks the counts
  # The corpus stage builds the embedded corpus; any other natural source needs nothing.
  for stage in [s for s in cfg.stages if s != "corpus" or cfg.natural == study.EMBEDDED]:
    if stage == "train" and not args.dry_run:
      study.check_budgets(cfg, study._paths(cfg))  # from the tokenized copies' stats
    jobs = stage_jobs(stage, cfg, gin_files, bindings, args.dry_run)
    scripts = launchers.job_scripts(args, jobs, cfg.study_dir)
    status_dir = os.path.join(args.status_dir, stage)
    print(f"stage {stage}: {len(scripts)} jobs on {args.launcher}, {args.parallel} at once, "
          f"{args.retries} retries each; state in {status_dir}", flush=True)
    if args.dry_run:
      for name, script in scripts.items():
        print(f"# job {name}\n{script}", end="", flush=True)
      continue
    results = sweep.Sweep(status_dir, args.parallel, args.retries).run(scripts)
    print(sweep.status_table(status_dir, {j.name: ", ".join(j.records) for j in jobs}),
          flush=True)
    failed = sorted(n for n, r in results.items() if r != "done")
    if failed:
      raise UserError(f"stage {stage}: {len(failed)} of {len(results)} jobs failed after "
                      f"{args.retries + 1} attempts (first: {failed[0]}; its log: "
                      f"{status_dir}/{failed[0]}.log); later stages need it, so the study "
                      "stops here; rerun the command to resume")
