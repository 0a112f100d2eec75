"""Put a study's training jobs on machines: here, on TPU VMs, or on GPU hosts, as a sweep.

A job is one `python -m synthjax.train` invocation: gin files plus overrides. Each backend
turns a job into one bash script (local; TPU VM: create, copy, train on every worker, collect,
and a delete that runs on every path; GPU hosts: every host started at once). The sweep
(sweep.py) runs --parallel scripts at once, retries a failed one --retries times and keeps
each job's state and log in --status_dir; `--status` prints them. `--dry_run` prints the
scripts instead of running them, which is also what the tests compare.

    python -m synthjax.launchers --gin_file=study/paper.gin --launcher=tpu_vm --dry_run \
        --tpu_zone=us-central2-b --tpu_type=v4-64 --bucket=gs://my-bucket/synthjax \
        --parallel=16 --retries=2
"""
import argparse
import dataclasses
import shlex
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


# Every job script ends its own way on every path: an interrupt becomes an exit, so the EXIT
# trap (delete the VM, stop the other hosts) runs on success, failure and interrupt alike.
_EXITS = "trap 'exit 143' TERM\ntrap 'exit 130' INT\n"


def local_script(job: Job, out_root: str) -> str:
  """A job on this machine."""
  return "set -euo pipefail\n" + _quote(job.train_args(f"{out_root}/{job.name}")) + "\n"


def tpu_vm_commands(job: Job, *, name: str, zone: str, accelerator: str, bucket: str,
                    version: str = "tpu-ubuntu2204-base", queued: bool = False,
                    project: str = "") -> dict:
  """The gcloud steps of a TPU VM job: create (or queue and wait until it is active), copy the
  code, install and train on every worker of the slice at once (`--worker=all` runs them
  concurrently; jax.distributed finds the workers itself), collect the run record; and the
  delete that must run whatever happens."""
  proj = [f"--project={project}"] if project else []
  where = [f"--zone={zone}"] + proj
  if queued:
    create = [_quote(["gcloud", "compute", "tpus", "queued-resources", "create", name,
                      f"--node-id={name}", f"--accelerator-type={accelerator}",
                      f"--runtime-version={version}"] + where),
              "until " + _quote(["gcloud", "compute", "tpus", "queued-resources", "describe",
                                 name, "--format=value(state.state)"] + where)
              + " | grep -q ACTIVE; do sleep 30; done"]
    delete = ["gcloud", "compute", "tpus", "queued-resources", "delete", name, "--force",
              "--quiet"] + where
  else:
    create = [_quote(["gcloud", "compute", "tpus", "tpu-vm", "create", name,
                      f"--accelerator-type={accelerator}", f"--version={version}"] + where)]
    delete = ["gcloud", "compute", "tpus", "tpu-vm", "delete", name, "--quiet"] + where
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, "--worker=all"] + where
  model_dir = f"{bucket}/runs/{job.name}"
  run = ("cd synthjax && python3 -m pip install -q -e . 'jax[tpu]==0.10.2' && "
         + _quote(job.train_args(model_dir)))
  steps = create + [
      _quote(["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", "--worker=all",
              ".", f"{name}:~/synthjax"] + where),
      _quote(ssh + [f"--command={run}"]),
      _quote(["gsutil", "-m", "cp", f"{model_dir}/run.json",
              f"{bucket}/records/{job.name}.json"]),
  ]
  return {"steps": steps, "delete": _quote(delete)}


def tpu_vm_script(job: Job, **kw) -> str:
  """A TPU VM job whose VM is deleted on every path (the EXIT trap is set before create)."""
  c = tpu_vm_commands(job, **kw)
  return ("set -euo pipefail\n"
          f"delete_vm() {{ {c['delete']} || true; }}\n"
          "trap delete_vm EXIT\n" + _EXITS + "\n".join(c["steps"]) + "\n")


def gpu_commands(job: Job, *, hosts: Sequence[str], out_root: str, port: int = 12355,
                 gpus_per_host: int = 8) -> List[str]:
  """One ssh line per host; host 0 coordinates jax.distributed over all of them. `-tt` ties
  the remote process to the connection, so stopping the line stops that host."""
  if not hosts:
    raise UserError("the GPU launcher needs at least one host")
  lines = []
  for i, host in enumerate(hosts):
    env = (f"SYNTHJAX_COORDINATOR={hosts[0]}:{port} SYNTHJAX_NUM_PROCESSES={len(hosts)} "
           f"SYNTHJAX_PROCESS_ID={i} CUDA_VISIBLE_DEVICES="
           + ",".join(str(g) for g in range(gpus_per_host)))
    remote = f"cd synthjax && {env} " + _quote(job.train_args(f"{out_root}/{job.name}"))
    lines.append(_quote(["ssh", "-tt", host, remote]))
  return lines


def gpu_script(job: Job, **kw) -> str:
  """Every host of the job started at once (a jax.distributed job waits for all of them);
  the first host to fail stops the others, and so does an interrupt."""
  starts = "".join(f"{line} &\npids+=($!)\n" for line in gpu_commands(job, **kw))
  return ("set -uo pipefail\n"
          "set -m  # each host's line in a process group of its own, stopped as a whole\n"
          "pids=()\n"
          "stop_hosts() { for p in \"${pids[@]}\"; do kill -- \"-$p\" 2>/dev/null || true; "
          "done; }\n"
          "trap stop_hosts EXIT\n" + _EXITS + starts
          + "for _ in \"${pids[@]}\"; do wait -n || exit 1; done\n")


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


def grid_cost(cfg, train_gin: Sequence[str] = ()) -> dict:
  """Training FLOPs of the whole grid (every job of every size, budget, mixture and seed), from
  each size preset's model config (and the study's extra train gin files: vocabulary, dtype)."""
  from synthjax import train  # noqa: F401  (registers what train gin files bind)
  from synthjax.data import loader  # noqa: F401
  from synthjax.models.config import ModelConfig
  from synthjax.models.flops import train_flops_per_token
  per_token = {}
  for size in cfg.model_sizes:
    gin_cli.parse([f"models/{size}.gin", *train_gin], [f"ModelConfig.V = {cfg.vocab_size}"])
    per_token[size] = train_flops_per_token(ModelConfig(), cfg.seq_len)
  jobs = cfg.jobs()
  return {"jobs": len(jobs), "tokens": sum(j["budget"] for j in jobs),
          "flops": sum(per_token[j["size"]] * j["budget"] for j in jobs)}


def cost_line(cost: dict, chip_tflops: float, mfu: float) -> str:
  hours = cost["flops"] / (chip_tflops * 1e12 * mfu) / 3600
  return (f"cost: {cost['jobs']} jobs, {cost['tokens']:.3g} training tokens, "
          f"{cost['flops']:.3g} FLOPs = {hours:.3g} chip-hours at {mfu:.0%} MFU of "
          f"{chip_tflops:g} TFLOP/s per chip")


def job_scripts(args, jobs: Sequence[Job]) -> dict:
  """name -> bash script, for the chosen backend."""
  if args.launcher == "local":
    return {job.name: local_script(job, args.out) for job in jobs}
  if args.launcher == "tpu_vm":
    if not (args.tpu_zone and args.bucket):
      raise UserError("the TPU VM launcher needs --tpu_zone and --bucket")
    if not args.bucket.startswith("gs://") or len(args.bucket) <= len("gs://"):
      raise UserError(f"--bucket={args.bucket}: not a gs:// URL (a TPU VM's disk goes away "
                      "with it: runs must live in a bucket)")
    return {job.name: tpu_vm_script(job, name=tpu_name(job.name), zone=args.tpu_zone,
                                    accelerator=args.tpu_type, bucket=args.bucket,
                                    queued=args.tpu_queued) for job in jobs}
  hosts = [h for h in args.hosts.split(",") if h]
  return {job.name: gpu_script(job, hosts=hosts, out_root=args.out) for job in jobs}


@exit_on_user_error("synthjax.launchers")
def main(argv=None):
  from synthjax import quiet, sweep
  quiet.import_tensorflow()  # its start-up lines stay out of this binary's output
  from synthjax.study_config import StudyConfig
  files, bindings, paths, rest = gin_cli.split_argv(sys.argv[1:] if argv is None else argv)
  p = ArgumentParser(prog="python -m synthjax.launchers", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--launcher", choices=("local", "tpu_vm", "gpu"), required=True)
  p.add_argument("--dry_run", action="store_true", help="print each job's script only")
  p.add_argument("--status", action="store_true", help="print the sweep's state only")
  p.add_argument("--parallel", type=int, default=1, help="jobs at once")
  p.add_argument("--retries", type=int, default=2, help="further attempts of a failed job")
  p.add_argument("--status_dir", default="sweep", help="the sweep's state and logs (local)")
  p.add_argument("--out", default="runs")
  p.add_argument("--tpu_zone", default="")
  p.add_argument("--tpu_type", default="v4-8")
  p.add_argument("--tpu_queued", action="store_true")
  p.add_argument("--bucket", default="")
  p.add_argument("--hosts", default="", help="comma-separated GPU hosts")
  p.add_argument("--chip_tflops", type=float, default=275.0,
                 help="peak bf16 TFLOP/s of one chip, for the cost line (TPU v4: 275)")
  p.add_argument("--mfu", type=float, default=0.4, help="assumed MFU, for the cost line")
  args = p.parse_args(rest)
  if not (0 < args.mfu <= 1 and args.chip_tflops > 0):
    raise UserError(f"--mfu must be in (0, 1] and --chip_tflops positive, got {args.mfu} and "
                    f"{args.chip_tflops}")
  if args.status:
    print(sweep.status_table(args.status_dir))
    return
  gin_cli.parse(files, bindings, paths)
  cfg = gin_cli.call_configured(StudyConfig)
  cfg.validate(dry_run=args.dry_run)
  scripts = job_scripts(args, study_jobs(cfg))
  print(cost_line(grid_cost(cfg, cfg.train_gin), args.chip_tflops, args.mfu), flush=True)
  runner = sweep.Sweep(args.status_dir, args.parallel, args.retries)  # checks the counts
  print(f"sweep: {len(scripts)} jobs on {args.launcher}, {args.parallel} at once, "
        f"{args.retries} retries each; state in {args.status_dir}", flush=True)
  if args.dry_run:
    for name, script in scripts.items():
      print(f"# job {name}\n{script}", end="", flush=True)
    return
  results = runner.run(scripts)
  records = {n: (f"{args.bucket}/records/{n}.json" if args.launcher == "tpu_vm"
                 else f"{args.out}/{n}/run.json") for n in scripts}
  print(sweep.status_table(args.status_dir, records), flush=True)
  failed = sorted(n for n, r in results.items() if r != "done")
  if failed:
    raise UserError(f"{len(failed)} of {len(results)} jobs failed after {args.retries + 1} "
                    f"attempts (first: {failed[0]}; its log: {args.status_dir}/{failed[0]}.log)")


if __name__ == "__main__":
  main()
