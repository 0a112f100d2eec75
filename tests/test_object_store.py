"""Everything on an object store: a GCS emulator on loopback (PyPI gcp-storage-emulator) holds
the sources, vocabulary, tokenized copies (made by the Beam binary), MODEL_DIR and checkpoints
of a 2-process training job that is killed with SIGKILL and resumed with 1 process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import gcs_emulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = (
    "river stone light market winter garden letter engine forest city music paper "
    "school road harbor tower field island summer bridge"
).split()


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator():
  pytest.importorskip("gcp_storage_emulator")
  with gcs_emulator.serving() as host:
    yield host


def _text(rng, n_words):
  return " ".join(rng.choice(WORDS, n_words)) + "."


def _env(tmp_path, devices):
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      TF_CPP_MIN_LOG_LEVEL="3",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
      SYNTHJAX_LOCAL_CACHE=str(tmp_path / "local-cache"),
      HOME=str(tmp_path / "home"),
  )
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


@pytest.mark.slow
def test_two_process_job_on_the_store_killed_and_resumed_on_one_process(emulator, tmp_path):
  from synthjax import storage
  from synthjax.data import vocab

  rng = np.random.default_rng(0)
  for i in range(4):  # four source shards, a validation domain
    storage.write_text(
        f"gs://bkt/src/part{i}.jsonl",
        "".join(json.dumps({"text": _text(rng, 60)}) + "\n" for _ in range(150)),
    )
  storage.write_text(
      "gs://bkt/valid/held.jsonl",
      "".join(json.dumps({"text": _text(rng, 60)}) + "\n" for _ in range(40)),
  )
  vocab.train_sentencepiece((_text(rng, 60) for _ in range(400)), 64, "gs://bkt/vocab/sp")
  gin_file = tmp_path / "store.gin"
  gin_file.write_text("""
import synthjax.data.tasks
import synthjax.data.token_cache
import synthjax.data.loader
register_study_data.vocabulary_path = 'gs://bkt/vocab/sp.model'
register_study_data.kinds = {'natural': 'gs://bkt/src/*.jsonl'}
register_study_data.validation = {'held': 'gs://bkt/valid/*.jsonl'}
register_tasks.register = @register_study_data
cache_dir.path = 'gs://bkt/tokens'
""")
  work = tmp_path / "cwd"  # every command runs here; nothing may be written in it
  work.mkdir()
  tok = subprocess.run(
      [
          sys.executable,
          "-m",
          "synthjax.data.tokenize",
          f"--gin_file={gin_file}",
          "--task=natural,valid_held",
          "--runner=DirectRunner",
          "--direct_num_workers=2",
          "--direct_running_mode=multi_processing",
      ],
      cwd=work,
      env=_env(tmp_path, 1),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert tok.returncode == 0, tok.stderr[-3000:]
  manifest = storage.read_json(storage.join(tok.stdout.split()[0], "manifest.json"))
  assert manifest["dtype"] == "uint16" and len(manifest["shards"]) == 4

  steps, batch, seq = 64, 8, 32  # long enough that the kill lands mid-run

  def train_cmd(model_dir, *extra):
    return [
        sys.executable,
        "-m",
        "synthjax.train",
        "--gin_file=train/base.gin",
        "--gin_file=models/tiny.gin",
        f"--gin_file={gin_file}",
        f"--gin.MODEL_DIR={model_dir}",
        f"--gin.TRAIN_TOKENS={steps * batch * seq}",
        f"--gin.BATCH_SIZE={batch}",
        f"--gin.SEQ_LEN={seq}",
        "--gin.ModelConfig.V=64",
        "--gin.TrainConfig.data_source=@MixtureLoader",
        "--gin.MixtureLoader.mixture=natural",
        "--gin.MixtureLoader.budget=%TRAIN_TOKENS",
        "--gin.MixtureLoader.register=@register_study_data",
        "--gin.TrainConfig.eval_sources={'held': @EvalSet}",
        "--gin.EvalSet.task=valid_held",
        "--gin.EvalSet.max_tokens=1024",
        "--gin.TrainConfig.log_every=1",
        "--gin.TrainConfig.checkpoint_every=4",
        # tensorstore's OCDBT manifest writes fail on the emulator ("Malformed
        # StorageGeneration"); one zarr folder per array works
        "--gin.TrainConfig.checkpoint_ocdbt=False",
        *extra,
    ]

  def losses(model_dir):
    lines = storage.read_text(f"{model_dir}/metrics.jsonl").splitlines()
    return {m["step"]: m["train/loss"] for m in map(json.loads, lines)}

  ref = subprocess.run(
      train_cmd("gs://bkt/ref"),
      cwd=work,
      env=_env(tmp_path, 8),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert ref.returncode == 0, ref.stderr[-3000:]

  port = _free_port()
  procs = [
      subprocess.Popen(
          train_cmd(
              "gs://bkt/killed",
              f"--gin.init_distributed.coordinator_address=127.0.0.1:{port}",
              "--gin.init_distributed.num_processes=2",
              f"--gin.init_distributed.process_id={i}",
          ),
          cwd=work,
          env=_env(tmp_path, 4),
          stdout=subprocess.DEVNULL,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  deadline = time.time() + 600
  while time.time() < deadline and any(p.poll() is None for p in procs):
    committed = [
        s
        for s in storage.listdir("gs://bkt/killed/checkpoints")
        if s.isdigit() and storage.exists(f"gs://bkt/killed/checkpoints/{s}/commit_success.txt")
    ]
    if any(int(s) >= 8 for s in committed):
      break
    time.sleep(0.2)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert not storage.exists("gs://bkt/killed/run.json"), "the job finished before the kill"
  before = losses("gs://bkt/killed")
  assert 8 <= max(before) < steps

  resumed = subprocess.run(
      train_cmd("gs://bkt/killed"),
      cwd=work,
      env=_env(tmp_path, 8),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stderr
  a, b = losses("gs://bkt/ref"), losses("gs://bkt/killed")
  assert sorted(a) == sorted(b) == list(range(1, steps + 1))  # every step logged once
  np.testing.assert_allclose(
      [b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=0, atol=1e-5
  )
  record = storage.read_json("gs://bkt/killed/run.json")
  assert record["model_dir"] == "gs://bkt/killed" and np.isfinite(record["losses"]["held"])
  assert storage.listdir("gs://bkt/killed/tensorboard")  # event files reached the store
  downloaded = [f for _, _, files in os.walk(tmp_path / "local-cache") for f in files]
  assert not [f for f in downloaded if f.startswith("tokens-")], downloaded  # read by ranges
  assert sorted(os.listdir(work)) == []
  # the analysis reads run records from the store and writes its report there
  from synthjax.analyze import report

  path = report.report(["gs://bkt/ref"], "gs://bkt/report", n_boot=20, n_fit_boot=5)
  assert path == "gs://bkt/report/report.md" and storage.exists("gs://bkt/report/analysis.json")
  assert "gs://bkt/ref/run.json" in storage.read_text("gs://bkt/report/runs.csv")


def test_a_tokenized_copy_on_the_store_is_read_by_ranges_and_never_copied(
    emulator, tmp_path, monkeypatch
):
  """A job reads the documents it needs from a copy on the store (ranged reads) and gets the
  tokens and batches a local copy of the same task gives; nothing lands on the local disk."""
  from synthjax import storage
  from synthjax.data import loader, tasks, token_cache, tokenize, vocab

  rng = np.random.default_rng(1)
  src = tmp_path / "src"
  src.mkdir()
  for i in range(3):  # three source shards of documents from 1 to 120 words
    (src / f"part{i}.jsonl").write_text(
        "".join(json.dumps({"text": _text(rng, int(n))}) + "\n" for n in rng.integers(1, 120, 50))
    )
  model = vocab.train_sentencepiece((_text(rng, 60) for _ in range(300)), 64, str(tmp_path / "sp"))
  tasks.register_task("ranges", str(src / "*.jsonl"), vocab.load_vocabulary(model))
  local_cache = tmp_path / "local-cache"
  monkeypatch.setenv("SYNTHJAX_LOCAL_CACHE", str(local_cache))
  copies = {}
  for where in (str(tmp_path / "tokens"), "gs://bkt/ranges-tokens"):
    monkeypatch.setenv("SYNTHJAX_CACHE", where)
    tokenize.tokenize(["ranges"])
    copies[where] = token_cache.TokenizedTask("ranges")
  local, remote = copies.values()
  assert remote.dir.startswith("gs://bkt/ranges-tokens/")
  assert len(token_cache.read_manifest("ranges")["shards"]) == 3
  docs = rng.permutation(len(local))
  np.testing.assert_array_equal(remote.lengths, local.lengths)
  for a, b in zip(remote.read(docs), local.read(docs)):
    np.testing.assert_array_equal(a, b)
  begin = rng.integers(0, local.lengths[docs] // 2)
  for a, b in zip(remote.read(docs, begin, begin + 3), local.read(docs, begin, begin + 3)):
    assert len(a) == 3
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
      np.concatenate(list(remote.shard_tokens(block=100))),
      np.concatenate(list(local.shard_tokens())),
  )
  batches = {}
  for where in copies:
    monkeypatch.setenv("SYNTHJAX_CACHE", where)
    source = loader.MixtureLoader(4, 32, mixture="ranges", budget=4 * 32 * 6)
    batches[where] = [source.next_batch() for _ in range(source.steps)]
  for x, y in zip(*batches.values()):
    assert all(np.array_equal(x[k], y[k]) for k in x)
  assert not local_cache.exists()  # no shard was downloaded whole
  assert storage.exists(f"{remote.dir}/tokens-00002-of-00003.bin")


def test_unreachable_store_is_one_line(tmp_path):
  work = tmp_path / "cwd"
  work.mkdir()
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "synthjax.train",
          "--gin_file=train/tiny_markov.gin",
          "--gin.MODEL_DIR=gs://bkt/run",
          "--gin.TRAIN_TOKENS=2048",
          "--gin.SEQ_LEN=32",
          "--gin.BATCH_SIZE=8",
      ],
      cwd=work,
      capture_output=True,
      text=True,
      timeout=300,
      env=dict(
          _env(tmp_path, 1),
          STORAGE_EMULATOR_HOST="http://127.0.0.1:9",
          TENSORSTORE_GCS_HTTP_URL="http://127.0.0.1:9",
      ),
  )
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
  assert "gs://bkt/run" in lines[0] and "cannot reach the object store" in lines[0]
  assert os.listdir(work) == []
