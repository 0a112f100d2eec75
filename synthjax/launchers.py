"""Put a study's training jobs on machines: here, on TPU VMs, or on GPU hosts.

A job is one `python -m synthjax.train` invocation: gin files plus overrides. Every launcher
builds the exact shell commands first; `dry_run` prints them instead of running them, which is
also what the tests compare.

    python -m synthjax.launchers --gin_file=study/paper.gin --launcher=tpu_vm --dry_run \
        --tpu_zone=us-central2-b --tpu_type=v4-64 --bucket=gs://my-bucket/synthjax
"""
import argparse
import dataclasses
import shlex
import subprocess
import sys
from typing import List, Sequence

from synthjax import gin_cli
from synthjax.errors import ArgumentParser, UserError, exit_on_user_error


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  gin_files: Sequence[str]
  bindings: Sequence[str]

  def train_args(self, model_dir: str) -> List[str]:
    return (["python3", "-m", "synthjax.train"] + [f"--gin_file={f}" for f in self.gin_files]
            + [f"--gin.MODEL_DIR={model_dir}"] + [f"--gin.{b}" for b in self.bindings])


def study_jobs(cfg) -> List[Job]:
  """One job per grid cell and seed of a StudyConfig (sizes x budgets x mixtures x seeds)."""
  out = []
  for j in cfg.jobs():
    name = "-".join([j["size"], str(j["budget"]),
                     j["mixture"].replace("+", "-").replace("@", "").replace(".", ""),
                     f"s{j['seed']}"])
    out.append(Job(name, ["train/base.gin", f"models/{j['size']}.gin"] + list(cfg.train_gin),
                   [f"TRAIN_TOKENS={j['budget']}", f"MixtureLoader.mixture={j['mixture']}",
                    "MixtureLoader.budget=%TRAIN_TOKENS",
                    "TrainConfig.data_source=@MixtureLoader", f"TrainConfig.seed={j['seed']}",
                    f"MixtureLoader.seed={j['seed']}"]))
  return out


def _quote(args: Sequence[str]) -> str:
  return " ".join(shlex.quote(a) for a in args)


def local_commands(jobs: Sequence[Job], out_root: str, parallel: int = 1) -> List[str]:
  """Shell lines that run the jobs here, `parallel` at a time (xargs -P)."""
  lines = [_quote(job.train_args(f"{out_root}/{job.name}")) for job in jobs]
  if parallel <= 1:
    return lines
  return ["printf '%s\\n' " + " ".join(shlex.quote(l) for l in lines)
          + f" | xargs -P {parallel} -I CMD sh -c CMD"]


def tpu_vm_commands(job: Job, *, name: str, zone: str, accelerator: str, bucket: str,
                    version: str = "tpu-ubuntu2204-base", queued: bool = False,
                    project: str = "") -> List[str]:
  """Create (or queue) a TPU VM, copy the code, install, run on every worker, collect, delete.
  jax.distributed finds the workers itself on a TPU pod, so no coordinator flags are needed."""
  proj = [f"--project={project}"] if project else []
  where = [f"--zone={zone}"] + proj
  if queued:
    create = ["gcloud", "compute", "tpus", "queued-resources", "create", name,
              f"--node-id={name}", f"--accelerator-type={accelerator}",
              f"--runtime-version={version}"] + where
  else:
    create = ["gcloud", "compute", "tpus", "tpu-vm", "create", name,
              f"--accelerator-type={accelerator}", f"--version={version}"] + where
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, "--worker=all"] + where
  model_dir = f"{bucket}/runs/{job.name}"
  run = ("cd synthjax && python3 -m pip install -q -e . 'jax[tpu]==0.10.2' && "
         + _quote(job.train_args(model_dir)))
  return [
      _quote(create),
      _quote(["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", "--worker=all",
              ".", f"{name}:~/synthjax"] + where),
      _quote(ssh + [f"--command={run}"]),
      _quote(["gsutil", "-m", "cp", "-r", f"{model_dir}/run.json",
              f"{bucket}/records/{job.name}.json"]),
      _quote(["gcloud", "compute", "tpus", "tpu-vm", "delete", name, "--quiet"] + where),
  ]


def gpu_commands(job: Job, *, hosts: Sequence[str], out_root: str, port: int = 12355,
                 gpus_per_host: int = 8) -> List[str]:
  """One ssh line per host; host 0 coordinates jax.distributed over all of them."""
  if not hosts:
    raise UserError("the GPU launcher needs at least one host")
  lines = []
  for i, host in enumerate(hosts):
    env = (f"SYNTHJAX_COORDINATOR={hosts[0]}:{port} SYNTHJAX_NUM_PROCESSES={len(hosts)} "
           f"SYNTHJAX_PROCESS_ID={i} CUDA_VISIBLE_DEVICES="
           + ",".join(str(g) for g in range(gpus_per_host)))
    remote = f"cd synthjax && {env} " + _quote(job.train_args(f"{out_root}/{job.name}"))
    lines.append(_quote(["ssh", host, remote]))
  return lines


def tpu_name(job_name: str) -> str:
  """A Cloud TPU node name for a job: lowercase letters, digits and hyphens, starting with a
  letter, at most 63 characters (underscores and dots are not allowed there); a hash of the
  full name keeps names unique when the job name is cut."""
  import hashlib
  import re
  name = "sj-" + re.sub(r"[^a-z0-9-]+", "-", job_name.lower()).strip("-")
  if len(name) > 63:
    name = name[:54].rstrip("-") + "-" + hashlib.sha256(job_name.encode()).hexdigest()[:8]
  return name


def _execute(lines: Sequence[str], dry_run: bool) -> None:
  for line in lines:
    print(line, flush=True)
    if not dry_run:
      subprocess.run(line, shell=True, check=True)


@exit_on_user_error("synthjax.launchers")
def main(argv=None):
  from synthjax.study_config import StudyConfig
  files, bindings, paths, rest = gin_cli.split_argv(sys.argv[1:] if argv is None else argv)
  p = ArgumentParser(prog="python -m synthjax.launchers", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--launcher", choices=("local", "tpu_vm", "gpu"), required=True)
  p.add_argument("--dry_run", action="store_true")
  p.add_argument("--parallel", type=int, default=1)
  p.add_argument("--out", default="runs")
  p.add_argument("--tpu_zone", default="")
  p.add_argument("--tpu_type", default="v4-8")
  p.add_argument("--tpu_queued", action="store_true")
  p.add_argument("--bucket", default="")
  p.add_argument("--hosts", default="", help="comma-separated GPU hosts")
  args = p.parse_args(rest)
  gin_cli.parse(files, bindings, paths)
  cfg = gin_cli.call_configured(StudyConfig)
  cfg.validate(dry_run=args.dry_run)
  jobs = study_jobs(cfg)
  if args.launcher == "local":
    _execute(local_commands(jobs, args.out, args.parallel), args.dry_run)
  elif args.launcher == "tpu_vm":
    if not (args.tpu_zone and args.bucket):
      raise UserError("the TPU VM launcher needs --tpu_zone and --bucket")
    if not args.bucket.startswith("gs://") or len(args.bucket) <= len("gs://"):
      raise UserError(f"--bucket={args.bucket}: not a gs:// URL (a TPU VM's disk goes away "
                      "with it: runs must live in a bucket)")
    for job in jobs:
      _execute(tpu_vm_commands(job, name=tpu_name(job.name), zone=args.tpu_zone,
                               accelerator=args.tpu_type, bucket=args.bucket,
                               queued=args.tpu_queued), args.dry_run)
  else:
    for job in jobs:
      _execute(gpu_commands(job, hosts=[h for h in args.hosts.split(",") if h],
                            out_root=args.out), args.dry_run)


if __name__ == "__main__":
  main()
