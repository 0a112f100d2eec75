"""Put a study's jobs on machines: here, on TPU VMs, or on GPU hosts.

A job is one binary invocation (`python -m synthjax.train`, or `python -m synthjax.study` for
one stage): gin files plus gin statements, run by one host or by every host of the backend at
once. Each backend turns a job into one bash script: local (N processes on this machine over
loopback), TPU VM (create, copy, run on the workers, and a delete that runs on every path),
GPU hosts (every host started at once). cluster.py walks a study's stages through them as
sweeps (sweep.py).
"""
import dataclasses
import shlex
from typing import Dict, List, Sequence

import gin

from synthjax import gin_cli
from synthjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  module: str                       # the binary: synthjax.train, or synthjax.study (a stage)
  gin_files: Sequence[str]
  bindings: Sequence[str]           # gin statements, e.g. "TRAIN_TOKENS = 4096"
  records: Sequence[str] = ()       # the run records a finished job leaves (status view)
  all_hosts: bool = True            # False: the job runs on one host (one process)

  def args(self) -> List[str]:
    return (["python3", "-m", self.module] + [f"--gin_file={f}" for f in self.gin_files]
            + [f"--gin_bindings={b}" for b in self.bindings])


def _quote(args: Sequence[str]) -> str:
  return " ".join(shlex.quote(a) for a in args)


# Every job script ends its own way on every path: an interrupt becomes an exit, so the EXIT
# trap (delete the VM, stop the other hosts) runs on success, failure and interrupt alike.
_EXITS = "trap 'exit 143' TERM\ntrap 'exit 130' INT\n"


def _env(coordinator: str, processes: int, index: int) -> str:
  return (f"SYNTHJAX_COORDINATOR={coordinator} SYNTHJAX_NUM_PROCESSES={processes} "
          f"SYNTHJAX_PROCESS_ID={index}")


def _concurrently(lines: Sequence[str], before: str = "") -> str:
  """Every line started at once, each in a process group of its own; the first to fail
  stops the others, and so does an interrupt (the EXIT trap). A failing line signals the
  script itself: `wait -n` missed a line that failed before the script reached it (seen once
  under load: the script then waited for the other hosts)."""
  starts = "".join(f"{{ {line}; }} || kill -USR1 $$ &\npids+=($!)\n" for line in lines)
  return ("set -uo pipefail\n"
          "set -m  # each line in a process group of its own, stopped as a whole\n"
          "pids=()\n"
          "stop_all() { for p in \"${pids[@]}\"; do kill -- \"-$p\" 2>/dev/null || true; "
          "done; }\n"
          "trap stop_all EXIT\n" + _EXITS + "trap 'exit 1' USR1  # a line failed\n" + before
          + starts + "wait\n")


def local_script(job: Job, processes: int = 1) -> str:
  """A job on this machine: one process, or `processes` of them joined over loopback (a
  training job through jax.distributed; a generation job's hosts split the corpus)."""
  if processes == 1 or not job.all_hosts:
    return "set -euo pipefail\n" + _quote(job.args()) + "\n"
  port = ("port=$(python3 -c 'import socket; s = socket.socket(); "
          "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])')\n")
  return _concurrently([f"{_env('127.0.0.1:$port', processes, i)} {_quote(job.args())}"
                        for i in range(processes)], before=port)


def tpu_vm_commands(job: Job, *, name: str, zone: str, accelerator: str,
                    version: str = "tpu-ubuntu2204-base", queued: bool = False,
                    project: str = "") -> dict:
  """The gcloud steps of a TPU VM job: create (or queue and wait until it is active), copy the
  code, install and run on every worker of the slice at once (`--worker=all` runs them
  concurrently; jax.distributed finds the workers itself) or on worker 0 for a one-host job;
  and the delete that must run whatever happens. The job writes its outputs and records to
  the study's bucket, where the next stage reads them."""
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
  workers = "--worker=all" if job.all_hosts else "--worker=0"
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, workers] + where
  run = ("cd synthjax && python3 -m pip install -q -e . 'jax[tpu]==0.10.2' && "
         + _quote(job.args()))
  steps = create + [
      _quote(["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse", "--worker=all",
              ".", f"{name}:~/synthjax"] + where),
      _quote(ssh + [f"--command={run}"]),
  ]
  return {"steps": steps, "delete": _quote(delete)}


def tpu_vm_script(job: Job, **kw) -> str:
  """A TPU VM job whose VM is deleted on every path (the EXIT trap is set before create)."""
  c = tpu_vm_commands(job, **kw)
  return ("set -euo pipefail\n"
          f"delete_vm() {{ {c['delete']} || true; }}\n"
          "trap delete_vm EXIT\n" + _EXITS + "\n".join(c["steps"]) + "\n")


def gpu_commands(job: Job, *, hosts: Sequence[str], port: int = 12355,
                 gpus_per_host: int = 8) -> List[str]:
  """One ssh line per host (the first host only, for a one-host job); host 0 coordinates
  jax.distributed over all of them. `-tt` ties the remote process to the connection, so
  stopping the line stops that host."""
  if not hosts:
    raise UserError("the GPU launcher needs at least one host (--hosts=h0,h1,...)")
  hosts = list(hosts) if job.all_hosts else list(hosts[:1])
  gpus = "CUDA_VISIBLE_DEVICES=" + ",".join(str(g) for g in range(gpus_per_host))
  coordinator = f"{hosts[0]}:{port}"
  return [_quote(["ssh", "-tt", host, f"cd synthjax && {_env(coordinator, len(hosts), i)} "
                  f"{gpus} " + _quote(job.args())]) for i, host in enumerate(hosts)]


def gpu_script(job: Job, **kw) -> str:
  """Every host of the job started at once (a jax.distributed job waits for all of them);
  the first host to fail stops the others, and so does an interrupt."""
  return _concurrently(gpu_commands(job, **kw))


def tpu_name(job_name: str, study: str = "") -> str:
  """A Cloud TPU node name for a job of a study: lowercase letters, digits and hyphens,
  starting with a letter, at most 63 characters (underscores and dots are not allowed there).
  A hash of the study and the full job name ends it, so two studies' jobs (or two long names
  cut alike) never share a VM name."""
  import hashlib
  import re
  digest = hashlib.sha256(f"{study}\0{job_name}".encode()).hexdigest()[:8]
  name = "sj-" + re.sub(r"[^a-z0-9-]+", "-", job_name.lower()).strip("-")
  return name[:54].rstrip("-") + "-" + digest


def grid_cost(cfg, train_gin: Sequence[str] = ()) -> dict:
  """Training FLOPs of the whole grid, from each size preset's model config (and the study's
  extra train gin files and bindings: vocabulary, dtype, schedule): with one full run per
  budget (`flops`), and with one run per (size, mixture, seed) at the largest budget plus a
  cooldown branch per smaller budget (`flops_branched`: each branch trains decay_fraction of
  its budget beyond the shared run)."""
  from synthjax import train  # noqa: F401  (registers what train gin files bind)
  from synthjax.data import loader  # noqa: F401
  from synthjax.models.config import ModelConfig
  from synthjax.models.flops import train_flops_per_token
  from synthjax.training.optimizer import OptimizerConfig
  per_token = {}
  for size in cfg.model_sizes:
    gin_cli.parse([f"models/{size}.gin", *train_gin],
                  [f"ModelConfig.V = {cfg.vocab_size}", *cfg.train_bindings])
    per_token[size] = train_flops_per_token(ModelConfig(), cfg.seq_len)
  decay = OptimizerConfig().decay_fraction
  jobs = cfg.jobs()
  top = max(cfg.budgets)
  branched = sum(per_token[j["size"]] * (j["budget"] if j["budget"] == top
                                         else decay * j["budget"]) for j in jobs)
  return {"jobs": len(jobs), "tokens": sum(j["budget"] for j in jobs),
          "flops": sum(per_token[j["size"]] * j["budget"] for j in jobs),
          "runs_branched": sum(j["budget"] == top for j in jobs), "flops_branched": branched,
          "decay_fraction": decay}


def grid_memory(cfg, train_gin: Sequence[str] = ()) -> Dict[str, dict]:
  """Each size preset's training job against the memory of the slice the train gin files name
  (memory.Slice): the per-device estimate and its verdict, by size."""
  from synthjax import sharding, train  # noqa: F401  (registers what train gin files bind)
  from synthjax.data import loader  # noqa: F401
  from synthjax.models.config import ModelConfig
  from synthjax.training import memory
  from synthjax.training.optimizer import OptimizerConfig
  plans = {}
  for size in cfg.model_sizes:
    gin_cli.parse([f"models/{size}.gin", *train_gin],
                  [f"ModelConfig.V = {cfg.vocab_size}", *cfg.train_bindings])
    try:
      grad_accum = gin.query_parameter("TrainConfig.grad_accum")
    except ValueError:  # not bound: TrainConfig's default
      grad_accum = 1
    plans[size] = memory.check(ModelConfig(), OptimizerConfig(), cfg.batch_size, cfg.seq_len,
                               grad_accum, sharding.configured_axes(), memory.Slice())
  return plans


def memory_line(size: str, plan: dict) -> str:
  parts = ", ".join(f"{k} {v / 2 ** 30:.1f}" for k, v in plan["parts"].items())
  return (f"memory: {size} on {plan['slice']} (mesh {plan['mesh']}, {plan['remat']} remat, "
          f"{plan['attention']} attention): {plan['total_gib']:.1f} GiB per device ({parts}); "
          f"{plan['verdict']}")


def cost_line(cost: dict, chip_tflops: float, mfu: float) -> str:
  def hours(flops):
    return flops / (chip_tflops * 1e12 * mfu) / 3600
  return (f"cost: {cost['jobs']} runs, one per budget: {cost['tokens']:.3g} training tokens, "
          f"{cost['flops']:.3g} FLOPs = {hours(cost['flops']):.3g} chip-hours; "
          f"{cost['runs_branched']} runs with a cooldown branch per smaller budget "
          f"({cost['decay_fraction']:g} of its tokens): {cost['flops_branched']:.3g} FLOPs = "
          f"{hours(cost['flops_branched']):.3g} chip-hours "
          f"({1 - cost['flops_branched'] / cost['flops']:.0%} less); at {mfu:.0%} MFU of "
          f"{chip_tflops:g} TFLOP/s per chip")


def job_scripts(args, jobs: Sequence[Job], study_dir: str) -> dict:
  """name -> bash script, for the chosen backend."""
  if args.launcher == "local":
    return {job.name: local_script(job, args.processes) for job in jobs}
  if args.launcher == "tpu_vm":
    if not args.tpu_zone:
      raise UserError("the TPU VM launcher needs --tpu_zone")
    if not study_dir.startswith("gs://"):
      raise UserError(f"StudyConfig.study_dir {study_dir}: not a gs:// URL (a TPU VM's disk "
                      "goes away with it: the study must live in a bucket)")
    return {job.name: tpu_vm_script(job, name=tpu_name(job.name, study_dir),
                                    zone=args.tpu_zone,
                                    accelerator=args.tpu_type, queued=args.tpu_queued)
            for job in jobs}
  hosts = [h for h in args.hosts.split(",") if h]
  return {job.name: gpu_script(job, hosts=hosts) for job in jobs}
