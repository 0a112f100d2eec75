"""A real Ray cluster on this machine for the cluster tests: a head node and worker nodes, each
its own `ray start` (its own raylet and workers), all on 127.0.0.2 (Ray turns 127.0.0.1 into
the machine's network address; any other loopback address it keeps).

The workers are TPU hosts as Ray sees them on Cloud TPU VMs: each advertises `TPU` chips and
the TPU node labels (slice name, worker id, pod type, topology), worker 0 of each slice the
`TPU-<pod type>-head` resource, and TPU_NAME is set in its environment (where Ray reads a
slice's name on GKE). So a study asking for a v4 2x2x2 slice (8 chips, 4 a host: 2 hosts) is
placed by ray.util.tpu's slice placement groups exactly as on a pod; the chips are not there,
and JAX runs on the CPU.

A node is killed as a machine dies: SIGKILL to every process started under it (its raylet,
its Ray workers, the binaries they run), found by a marker in their environment.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Dict, List

IP = "127.0.0.2"
TOPOLOGY, VERSION, POD_TYPE, CHIPS_PER_HOST = "2x2x2", "v4", "v4-16", 4


def _ray_bin() -> str:
  return os.path.join(os.path.dirname(sys.executable), "ray")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind((IP, 0))
    return s.getsockname()[1]


class LoopbackCluster:

  def __init__(self, tmp_path, slices: int = 2, hosts: int = 2, env: Dict[str, str] = None):
    self.marker = f"synthjax-test-{uuid.uuid4().hex[:8]}"
    self.port = _free_port()
    self.address = f"{IP}:{self.port}"
    self.slices, self.hosts = slices, hosts
    self.tmp = str(tmp_path)
    self.env = dict(env or {})
    self.nodes: Dict[str, List[str]] = {}  # node name -> its `ray start` arguments

  def _env(self, node: str, extra: Dict[str, str]) -> Dict[str, str]:
    return {
        **os.environ,
        **self.env,
        **extra,
        "RAY_USAGE_STATS_ENABLED": "0",
        "SYNTHJAX_TEST_CLUSTER": self.marker,
        "SYNTHJAX_TEST_NODE": f"{self.marker}-{node}",
    }

  def start(self) -> "LoopbackCluster":
    """The head, then each worker in turn (started at once, they overloaded 2 cores: a raylet
    timed out registering). Whatever started is stopped if a node fails to."""
    common = ["--node-ip-address", IP, "--disable-usage-stats"]
    try:
      self._start(
          "head",
          [
              _ray_bin(),
              "start",
              "--head",
              "--port",
              str(self.port),
              "--num-cpus",
              "2",
              "--include-dashboard=false",
              *common,
          ],
          {},
      )
      for name, (args, env) in self._worker_specs(common).items():
        self._start(name, args, env)
      self.wait_for_nodes(1 + self.slices * self.hosts)
    except BaseException:
      self.stop()
      raise
    return self

  def _worker_specs(self, common):
    specs = {}
    for s in range(self.slices):
      for h in range(self.hosts):
        resources = {"TPU": CHIPS_PER_HOST, **({f"TPU-{POD_TYPE}-head": 1} if h == 0 else {})}
        labels = {
            "ray.io/tpu-slice-name": f"slice-{s}",
            "ray.io/tpu-worker-id": str(h),
            "ray.io/tpu-pod-type": POD_TYPE,
            "ray.io/tpu-topology": TOPOLOGY,
        }
        specs[f"s{s}h{h}"] = (
            [
                _ray_bin(),
                "start",
                "--address",
                self.address,
                "--num-cpus",
                "1",
                "--resources",
                json.dumps(resources),
                "--labels",
                ",".join(f"{k}={v}" for k, v in labels.items()),
                *common,
            ],
            {"TPU_NAME": f"slice-{s}", "TPU_WORKER_ID": str(h)},
        )
    return specs

  def _start(self, name, args, env):
    self.nodes[name] = (args, env)
    p = subprocess.run(
        args,
        env=self._env(name, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=self.tmp,
        timeout=300,
    )
    assert p.returncode == 0, f"node {name}: " + p.stdout[-2000:]

  def restart_node(self, name: str) -> None:
    args, env = self.nodes[name]
    self._start(name, args, env)

  def alive_nodes(self) -> int:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print(sum(n['Alive'] for n in ray.nodes()))" % self.address
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **self.env},
    )
    return int(out.stdout.strip().splitlines()[-1])

  def wait_for_nodes(self, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while self.alive_nodes() != n:
      assert time.time() < deadline, f"the cluster did not reach {n} alive nodes"
      time.sleep(1)

  def pids(self, marker: str) -> List[int]:
    """Processes whose environment holds this marker (a node's, or the whole cluster's), and
    their descendants: Ray's agents retitle themselves (setproctitle), which overwrites the
    environment /proc shows, so they are found as their raylet's children."""
    marked, parent = set(), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
      try:
        with open(f"/proc/{pid}/environ", "rb") as f:
          environ = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
          parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        continue
      if any(
          e.startswith(b"SYNTHJAX_TEST_") and e.endswith(b"=" + marker.encode()) for e in environ
      ):
        marked.add(int(pid))
    found, grew = set(marked), True
    while grew:
      children = {p for p, pp in parent.items() if pp in found} - found
      found |= children
      grew = bool(children)
    return sorted(found - {os.getpid()})

  def kill_node(self, name: str) -> int:
    """SIGKILL to every process of the node, as when its machine dies; how many there were."""
    pids = self.pids(f"{self.marker}-{name}")
    for pid in pids:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    return len(pids)

  def left_running(self) -> List[int]:
    return self.pids(self.marker)

  def stop(self) -> None:
    for pid in self.left_running():
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    deadline = time.time() + 30
    while self.left_running() and time.time() < deadline:
      time.sleep(0.2)
