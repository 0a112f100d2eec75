"""The Ray cluster a study runs on: joining it, the nodes it has, the slices they form, and the
work a node runs for a stage (a synthjax binary as its own process)."""

import contextlib
import ctypes
import dataclasses
import importlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
from typing import Dict, List, Sequence

from synthjax import storage
from synthjax.errors import UserError


def connect(address: str, env: Dict[str, str]) -> None:
  """Join the cluster at `address` (RAY_ADDRESS), or say in one line why not. The address is
  probed first: ray.init on an address where nothing listens retries for a minute."""
  import ray

  if not address:
    raise UserError(
        "--launcher=ray needs a cluster: set RAY_ADDRESS (the address `ray start "
        "--head` prints, host:6379) or pass --ray_address"
    )
  host, _, port = address.replace("ray://", "").rpartition(":")
  try:
    socket.create_connection((host, int(port)), timeout=5).close()
  except (OSError, ValueError) as e:
    raise UserError(f"no Ray cluster at RAY_ADDRESS={address}: {e}") from None
  ray.init(
      address=address,
      runtime_env={"env_vars": env},
      logging_level=logging.ERROR,
      log_to_driver=False,
      configure_logging=True,
  )


def alive_nodes() -> List[dict]:
  import ray

  return [n for n in ray.nodes() if n.get("Alive")]


def require_shared_store(study_dir: str, nodes: Sequence[dict]) -> None:
  if len(nodes) > 1 and not storage.is_remote(study_dir):
    raise UserError(
        f"StudyConfig.study_dir {study_dir}: a local folder, but the cluster has "
        f"{len(nodes)} nodes, and each would see only its own disk: put the study on "
        "a store every node reads (gs://BUCKET/...)"
    )


def require_tfds_data_dir(cfg) -> None:
  """A 'tfds:' source on a cluster is read where it was prepared: a fresh node has no copy and
  would try to build the dataset itself."""
  sources = [cfg.natural, *cfg.eval_domains.values()]
  if any(s.startswith("tfds:") for s in sources) and not storage.is_remote(cfg.tfds_data_dir):
    raise UserError(
        f"StudyConfig.natural {cfg.natural}: a TFDS source on a cluster needs "
        "StudyConfig.tfds_data_dir on a store every node reads (gs://...), where "
        f"the dataset is prepared; got {cfg.tfds_data_dir!r}"
    )


@dataclasses.dataclass(frozen=True)
class SliceShape:
  """The hosts one training run holds: a TPU slice (version and topology, as Ray's TPU
  placement names them), or `hosts` machines with `gpus` GPUs each."""

  tpu_version: str = ""
  tpu_topology: str = ""
  hosts: int = 1
  gpus: int = 0

  @property
  def is_tpu(self) -> bool:
    return bool(self.tpu_version)

  def describe(self) -> str:
    if self.is_tpu:
      return f"TPU {self.tpu_version} {self.tpu_topology} ({self.hosts} hosts)"
    return f"{self.hosts} hosts" + (f" of {self.gpus} GPUs" if self.gpus else "")

  def host_resources(self) -> Dict[str, float]:
    """What one accelerator host of this shape advertises (a generation part holds one)."""
    if self.is_tpu:
      return {"TPU": float(_tpu_chips_per_host(self))}
    return {"GPU": float(self.gpus)} if self.gpus else {"CPU": 1.0}


def _tpu_chips_per_host(shape: SliceShape) -> int:
  from ray.util.tpu import get_chips_per_host

  return get_chips_per_host(shape.tpu_topology, shape.tpu_version)


def slice_shape(args) -> SliceShape:
  if args.tpu_version or args.tpu_topology:
    if not (args.tpu_version and args.tpu_topology):
      raise UserError(
          "a TPU slice needs both --tpu_version (v4, v5p, v5litepod, v6e) and "
          "--tpu_topology (2x2x2, 4x4, ...)"
      )
    from ray.util.tpu import get_num_chips_from_topology

    try:
      chips = get_num_chips_from_topology(args.tpu_topology)
    except Exception:
      raise UserError(
          f"--tpu_topology={args.tpu_topology}: not a TPU topology such as 2x2x2 or 4x4"
      ) from None
    shape = SliceShape(args.tpu_version, args.tpu_topology)
    return dataclasses.replace(shape, hosts=max(1, chips // _tpu_chips_per_host(shape)))
  if args.slice_hosts < 1 or args.gpus_per_host < 0:
    raise UserError(
        f"--slice_hosts must be at least 1 and --gpus_per_host at least 0, got "
        f"{args.slice_hosts} and {args.gpus_per_host}"
    )
  return SliceShape(hosts=args.slice_hosts, gpus=args.gpus_per_host)


def count_slices(shape: SliceShape, nodes: Sequence[dict]) -> int:
  """How many whole slices of this shape the cluster has now."""
  if shape.is_tpu:
    from ray.util.tpu import get_num_tpu_slices

    return get_num_tpu_slices(shape.tpu_topology, "TPU-" + shape.tpu_version.upper())
  need = shape.host_resources()
  hosts = sum(
      all(n["Resources"].get(k, 0) >= v for k, v in need.items())
      for n in nodes
      if not n["Resources"].get("node:__internal_head__")
  )
  return hosts // shape.hosts


def require_slices(shape: SliceShape, nodes: Sequence[dict]) -> int:
  n = count_slices(shape, nodes)
  if n == 0:
    raise UserError(
        f"the cluster has no slice of {shape.describe()}: its nodes offer "
        f"{_node_summary(nodes)}"
    )
  return n


def _node_summary(nodes: Sequence[dict]) -> str:
  parts = []
  for n in nodes:
    res = {
        k: v
        for k, v in n["Resources"].items()
        if k in ("CPU", "GPU", "TPU") or k.startswith("TPU-")
    }
    labels = {
        k.split("/")[-1]: v
        for k, v in (n.get("Labels") or {}).items()
        if k.startswith("ray.io/tpu")
    }
    parts.append(f"{n['NodeManagerAddress']} {res}" + (f" {labels}" if labels else ""))
  return "; ".join(parts)


def _die_with_parent() -> None:
  """The binary goes when the Ray worker that started it goes (a lost node, a cancel)."""
  ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_binary(argv: Sequence[str], env: Dict[str, str], log_path: str) -> dict:
  """Run one synthjax binary on this node with the node's own Python (the one running Ray
  here), its output appended to log_path (on the store). Returns the exit code and the
  output's last lines."""
  import ray

  node = ray.util.get_node_ip_address()
  argv = [sys.executable if argv[0] == "python3" else argv[0], *argv[1:]]
  proc = subprocess.run(
      list(argv),
      env={**os.environ, **env},
      capture_output=True,
      text=True,
      preexec_fn=_die_with_parent,
  )
  return _logged(log_path, node, " ".join(argv[:3]), proc.returncode, proc.stdout + proc.stderr)


def run_in_process(argv: Sequence[str], env: Dict[str, str], log_path: str) -> dict:
  """run_binary's `python3 -m MODULE ARGS` in this long-lived Ray worker instead of a fresh
  process (what it loads stays for the next call): MODULE's main(ARGS), its output shown as it
  comes and appended to log_path, its exit code and last lines returned."""
  import ray

  if list(argv[:2]) != ["python3", "-m"]:
    raise ValueError(f"run_in_process runs `python3 -m MODULE ...`, got {list(argv[:3])}")
  main = importlib.import_module(argv[2]).main
  os.environ.update(env)
  captured = io.StringIO()
  code = 0
  with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
    with contextlib.redirect_stderr(_Tee(sys.stderr, captured)):
      try:
        main(list(argv[3:]))
      except SystemExit as e:  # a binary's main ends a failure with its exit code
        code = e.code if isinstance(e.code, int) else 1
  node = ray.util.get_node_ip_address()
  return _logged(log_path, node, " ".join(argv[:3]), code, captured.getvalue())


class _Tee(io.TextIOBase):
  """Text written to several streams at once: a part's output shows as it comes and is kept."""

  def __init__(self, *streams):
    self.streams = streams

  def write(self, text: str) -> int:
    for s in self.streams:
      s.write(text)
    return len(text)

  def flush(self) -> None:
    for s in self.streams:
      s.flush()


def _logged(log_path: str, node: str, what: str, code: int, out: str) -> dict:
  try:
    old = storage.read_text(log_path) if storage.exists(log_path) else ""
    storage.write_text(log_path, old + f"=== {node}: {what} exit {code} ===\n" + out)
  except Exception as e:  # the log is for people: it never decides the outcome
    out += f"\n(log not written to {log_path}: {e})"
  return {"code": code, "node": node, "tail": out[-3000:]}


def free_port() -> tuple:
  """This node's address and a port free on it now: the coordinator of a multi-host run."""
  import ray

  s = socket.socket()
  s.bind(("", 0))
  port = s.getsockname()[1]
  s.close()
  return ray.util.get_node_ip_address(), port
