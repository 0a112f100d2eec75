"""The train binary: resume after SIGKILL, multi-process, meshes, accumulation, errors."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from synthjax import gin_cli
from synthjax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = ["--gin_file=train/tiny_markov.gin", "--gin.SEQ_LEN=32", "--gin.BATCH_SIZE=8"]


def _env(devices=8):
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      TF_CPP_MIN_LOG_LEVEL="3",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
  )
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _train_cmd(model_dir, tokens, *extra):
  return [
      sys.executable,
      "-m",
      "synthjax.train",
      *BASE,
      f"--gin.MODEL_DIR={model_dir}",
      f"--gin.TRAIN_TOKENS={tokens}",
      *extra,
  ]


def _metrics(model_dir):
  with open(os.path.join(model_dir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def _losses(model_dir):
  return {m["step"]: m["train/loss"] for m in _metrics(model_dir)}


def _in_process(model_dir, tokens, bindings=()):
  """Train in this process (faster than a subprocess for the mesh comparisons)."""
  from synthjax import train as train_lib
  from synthjax.models.config import ModelConfig
  from synthjax.training.config import TrainConfig
  from synthjax.training.optimizer import OptimizerConfig

  files, binds, _, _ = gin_cli.split_argv(
      BASE + [f"--gin.MODEL_DIR={model_dir}", f"--gin.TRAIN_TOKENS={tokens}"]
  )
  gin_cli.parse(files, binds + list(bindings))
  return train_lib.train(TrainConfig(), ModelConfig(), OptimizerConfig())


LOG_EVERY_STEP = ["--gin.TrainConfig.log_every=1", "--gin.TrainConfig.checkpoint_every=5"]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
  tokens = 8 * 32 * 30  # 30 steps
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  subprocess.run(
      _train_cmd(ref, tokens, *LOG_EVERY_STEP), env=_env(), check=True, capture_output=True
  )
  proc = subprocess.Popen(
      _train_cmd(killed, tokens, *LOG_EVERY_STEP),
      env=_env(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  while time.time() < deadline:  # wait until past a checkpoint, then kill without warning
    path = os.path.join(killed, "metrics.jsonl")
    if os.path.exists(path) and sum(1 for _ in open(path)) >= 13:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps_before = max(_losses(killed))
  assert 13 <= steps_before < 30, "the run was not killed mid-way"
  subprocess.run(
      _train_cmd(killed, tokens, *LOG_EVERY_STEP), env=_env(), check=True, capture_output=True
  )
  ref_losses, resumed = _losses(ref), _losses(killed)
  assert sorted(resumed) == list(range(1, 31))  # every step logged exactly once
  assert resumed == ref_losses  # bit-identical losses: same batches, same math
  assert _data_state(killed, 30) == {"batch_index": 30}  # none repeated or skipped
  with open(os.path.join(killed, "run.json")) as f:
    record = json.load(f)
  assert record["tokens"] == tokens and set(record["losses"]) == {"markov0", "markov1"}
  # a finished run rerun is a no-op that keeps its record
  again = subprocess.run(
      _train_cmd(killed, tokens, *LOG_EVERY_STEP),
      env=_env(),
      check=True,
      capture_output=True,
      text=True,
  )
  assert json.loads(again.stdout.strip().splitlines()[-1])["loss"] == record["loss"]
  assert _losses(killed) == ref_losses


def _data_state(model_dir, step):
  """The data iterator's state as committed inside the orbax checkpoint of `step`."""
  import orbax.checkpoint as ocp

  with ocp.CheckpointManager(os.path.join(model_dir, "checkpoints")) as manager:
    out = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
  return dict(out["data"])


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_loopback_match_one_process(tmp_path):
  tokens = 8 * 32 * 6
  one = str(tmp_path / "one")
  subprocess.run(
      _train_cmd(one, tokens, "--gin.TrainConfig.log_every=1"),
      env=_env(8),
      check=True,
      capture_output=True,
  )
  two = str(tmp_path / "two")
  port = _free_port()
  procs = [
      subprocess.Popen(
          _train_cmd(
              two,
              tokens,
              "--gin.TrainConfig.log_every=1",
              f"--gin.init_distributed.coordinator_address=127.0.0.1:{port}",
              "--gin.init_distributed.num_processes=2",
              f"--gin.init_distributed.process_id={i}",
              # the data axis across the two processes as across two slices (hybrid mesh)
              "--gin.make_mesh.dcn_axes={'data': 2}",
          ),
          env=_env(4),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  a, b = _losses(one), _losses(two)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  np.testing.assert_allclose(
      [b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=0, atol=1e-5
  )
  # The data state is the global batch index, saved once inside the orbax checkpoint.
  assert _data_state(two, 6) == {"batch_index": 6}


def test_meshes_give_the_same_loss_curve(tmp_path):
  tokens = 8 * 32 * 8
  curves = {}
  for name, axes in [
      ("dp", "{'data': 8, 'fsdp': 1, 'tensor': 1}"),
      ("fsdp", "{'data': 1, 'fsdp': 8, 'tensor': 1}"),
      ("mixed", "{'data': 2, 'fsdp': 2, 'tensor': 2}"),
  ]:
    d = str(tmp_path / name)
    _in_process(d, tokens, [f"make_mesh.axes = {axes}", "TrainConfig.log_every = 1"])
    curves[name] = [m["train/loss"] for m in _metrics(d)]
  assert len(curves["dp"]) == 8
  np.testing.assert_allclose(curves["fsdp"], curves["dp"], rtol=0, atol=1e-5)
  np.testing.assert_allclose(curves["mixed"], curves["dp"], rtol=0, atol=1e-5)
  assert curves["dp"][-1] < curves["dp"][0]  # it learns


def _tensorboard_scalars(model_dir, tag):
  """step -> value of one scalar in the run's TensorBoard event files."""
  import glob

  import tensorflow as tf

  out = {}
  for path in glob.glob(os.path.join(model_dir, "tensorboard", "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == tag:
          out[event.step] = float(tf.make_ndarray(value.tensor))
  return out


def test_tensorboard_holds_the_metrics_of_metrics_jsonl(tmp_path):
  d = str(tmp_path / "run")
  _in_process(d, 8 * 32 * 6, ["TrainConfig.log_every = 2"])
  assert _tensorboard_scalars(d, "train/loss") == pytest.approx(_losses(d), rel=1e-6)
  assert sorted(_tensorboard_scalars(d, "eval/avg/loss")) == [6]  # evaluated at the end


def test_gradient_accumulation_matches_full_batch(tmp_path):
  tokens = 16 * 32 * 4  # 2 rows on each of the 8 devices: one in each microbatch
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  common = ["TrainConfig.log_every = 1", "TrainConfig.batch_size = 16"]
  _in_process(a, tokens, common)
  _in_process(b, tokens, common + ["TrainConfig.grad_accum = 2"])
  np.testing.assert_allclose(
      [m["train/loss"] for m in _metrics(b)],
      [m["train/loss"] for m in _metrics(a)],
      rtol=0,
      atol=1e-5,
  )


def test_wsd_schedule_warms_up_holds_then_decays():
  from synthjax.training import optimizer

  cfg = optimizer.OptimizerConfig(
      peak_lr=1.0, warmup_fraction=0.1, schedule="wsd", decay_fraction=0.2, final_lr_fraction=0.0
  )
  lr = optimizer.schedule(cfg, 100)
  assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
  assert float(lr(50)) == pytest.approx(1.0) and float(lr(80)) == pytest.approx(1.0)
  assert float(lr(90)) == pytest.approx(0.5) and float(lr(100)) == pytest.approx(0.0)


def test_a_cooldown_branch_is_the_run_of_its_length_and_leaves_the_main_run_alone(tmp_path):
  """One wsd run with a branch at 10 of its 20 steps: the branch's record is what a 10-step
  wsd run (same warmup) records, and the 20-step record is what a run without branches
  records (the branch restores the saved state and data position)."""
  wsd = ["OptimizerConfig.schedule = 'wsd'", "OptimizerConfig.warmup_fraction = 0.1"]
  step_tokens = 8 * 32
  main, alone, short = (str(tmp_path / n) for n in ("main", "alone", "short"))
  full = _in_process(
      main, 20 * step_tokens, wsd + [f"TrainConfig.branch_budgets = [{10 * step_tokens}]"]
  )
  branch = json.load(open(os.path.join(main, "branches", str(10 * step_tokens), "run.json")))
  assert branch["tokens"] == 10 * step_tokens and branch["branch"] == {
      "from_step": 8,
      "of_steps": 20,
  }
  # the 10-step run warms up as long as the branch did (warmup from the shortest budget)
  ten = _in_process(short, 10 * step_tokens, wsd)
  # and so does the 20-step run alone: 5% of 20 steps is the branch's 10% of 10
  twenty = _in_process(alone, 20 * step_tokens, wsd + ["OptimizerConfig.warmup_fraction = 0.05"])
  assert branch["losses"] == pytest.approx(ten["losses"], abs=1e-5)
  assert full["losses"] == pytest.approx(twenty["losses"], abs=1e-5)
  assert full["losses"] != pytest.approx(branch["losses"], abs=1e-3)


def test_branch_budgets_need_the_wsd_schedule(tmp_path):
  with pytest.raises(UserError, match="branch_budgets needs OptimizerConfig.schedule = 'wsd'"):
    _in_process(str(tmp_path / "r"), 20 * 8 * 32, ["TrainConfig.branch_budgets = [1024]"])
  assert not os.path.exists(tmp_path / "r")


def test_sigterm_saves_and_a_rerun_finishes(tmp_path):
  d = str(tmp_path / "run")
  tokens = 8 * 32 * 400
  proc = subprocess.Popen(
      _train_cmd(
          d, tokens, "--gin.TrainConfig.log_every=1", "--gin.TrainConfig.checkpoint_every=1000"
      ),
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  deadline = time.time() + 300
  while time.time() < deadline and not (
      os.path.exists(os.path.join(d, "metrics.jsonl"))
      and sum(1 for _ in open(os.path.join(d, "metrics.jsonl"))) >= 3
  ):
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-2000:]  # saved, but not done: a launcher retries it
  assert "preempted; saved step" in err
  saved = int(err.split("preempted; saved step ")[1].split(",")[0])
  assert 3 <= saved < 400
  assert os.path.isdir(os.path.join(d, "checkpoints", str(saved)))
  assert not os.path.exists(os.path.join(d, "run.json"))
  rerun = subprocess.run(
      _train_cmd(
          d, tokens, "--gin.TrainConfig.log_every=1", "--gin.TrainConfig.checkpoint_every=1000"
      ),
      env=_env(),
      capture_output=True,
      text=True,
      check=True,
  )
  assert f"resumed from step {saved}" in rerun.stderr
  assert sorted(_losses(d)) == list(range(1, 401))
  assert os.path.exists(os.path.join(d, "run.json"))


def test_a_second_job_on_a_running_model_dir_is_refused_and_the_first_is_intact(tmp_path):
  d = str(tmp_path / "run")
  cmd = _train_cmd(d, 8 * 32 * 300, "--gin.TrainConfig.log_every=1")
  first = subprocess.Popen(
      cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  deadline = time.time() + 300
  while time.time() < deadline and not (
      os.path.exists(os.path.join(d, "metrics.jsonl"))
      and sum(1 for _ in open(os.path.join(d, "metrics.jsonl"))) >= 2
  ):
    time.sleep(0.05)
  second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
  assert first.poll() is None, "the first job ended before the second started"
  lines = [l for l in second.stderr.splitlines() if l.strip()]
  assert second.returncode == 2 and len(lines) == 1, second.stderr[-2000:]
  assert re.search(
      rf"run is in use by a training run on host \S+ \(pid {first.pid}, for \d+s\)", lines[0]
  ), lines[0]
  _, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-2000:]
  steps = [m["step"] for m in _metrics(d)]
  assert steps == list(range(1, 301))  # each step once, in order: one writer
  assert os.path.exists(os.path.join(d, "run.json"))
  assert not os.path.exists(os.path.join(d, "lease.json"))


DIVERGING = [
    "OptimizerConfig.peak_lr = 1e12",
    "OptimizerConfig.warmup_fraction = 0.0",
    "OptimizerConfig.clip_norm = 1e12",
]


def test_divergence_stops_with_a_clear_message_and_keeps_the_good_checkpoint(tmp_path):
  d = str(tmp_path / "nan")
  with pytest.raises(
      UserError,
      match=r"training diverged: train/loss is (nan|inf) at step "
      r"\d+ .*diverged.json records it, the checkpoint of step \d+ is kept",
  ):
    _in_process(d, 8 * 32 * 40, DIVERGING + ["TrainConfig.checkpoint_every = 1"])
  why = json.load(open(os.path.join(d, "diverged.json")))
  assert not np.isfinite(why["loss"]) and why["checkpoints"][-1] < why["step"]
  assert "OptimizerConfig.peak_lr = 1e+12" in why["config"].replace("1000000000000.0", "1e+12")
  # Only committed checkpoints: nothing half-written is left beside them.
  assert sorted(os.listdir(os.path.join(d, "checkpoints"))) == [
      str(s) for s in sorted(why["checkpoints"], key=str)
  ]
  from synthjax.training.checkpointing import TrainCheckpointer

  ckpt = TrainCheckpointer(d)
  step = ckpt.latest_step()
  assert step is not None
  import orbax.checkpoint as ocp

  state = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
      "state"
  ]
  leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(state)]
  assert all(np.isfinite(x).all() for x in leaves if x.dtype.kind == "f")
  ckpt.close()


def _mount_small_disk(path, size):
  os.makedirs(path)
  proc = subprocess.run(
      ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True
  )
  if proc.returncode:
    pytest.skip(
        f"a full disk is made with a small tmpfs, and mount failed here: {proc.stderr.strip()}"
    )


@pytest.mark.slow
def test_a_disk_that_fills_after_a_checkpoint_keeps_it_and_a_rerun_resumes(tmp_path):
  disk = str(tmp_path / "disk")
  _mount_small_disk(disk, "3500k")  # one checkpoint of this model (~2.2 MB), not two
  try:
    d = os.path.join(disk, "run")
    cmd = _train_cmd(d, 8 * 32 * 40, "--gin.TrainConfig.checkpoint_every=20")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith("the checkpoint of step 20 is kept: rerun to resume once there is room")
    ), proc.stderr
    assert os.listdir(os.path.join(d, "checkpoints")) == ["20"]  # nothing half-written
    subprocess.run(["mount", "-o", "remount,size=16m", disk], check=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed from step 20" in proc.stderr
    assert [m["step"] for m in _metrics(d)] == list(range(5, 41, 5))
  finally:
    subprocess.run(["umount", disk], check=True)


def _one_error_line(args, cwd):
  proc = subprocess.run(
      [sys.executable, "-m", "synthjax.train", *args],
      capture_output=True,
      text=True,
      env=_env(),
      cwd=cwd,
  )
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  return proc.returncode, lines


@pytest.mark.parametrize(
    "args,message",
    [
        (
            BASE + ["--gin.MODEL_DIR=m", "--gin.TRAIN_TOKENS=1000", "--gin.nope.x=1"],
            "No configurable matching 'nope'",
        ),
        (
            BASE
            + ["--gin.MODEL_DIR=m", "--gin.TRAIN_TOKENS=1000", "--gin.TrainConfig.seq_len='x'"],
            "TrainConfig.seq_len must be int, got 'x'",
        ),
        (BASE + ["--gin.TRAIN_TOKENS=1000"], "missing required gin binding MODEL_DIR"),
    ],
)
def test_bad_gin_is_one_clear_line(tmp_path, args, message):
  code, lines = _one_error_line(args, str(tmp_path))
  assert code == 2 and len(lines) == 1, lines
  assert lines[0].startswith("synthjax.train: error: ") and message in lines[0]


def test_model_dir_of_another_model_shape_is_refused(tmp_path):
  d = str(tmp_path / "run")
  _in_process(d, 8 * 32 * 2)
  code, lines = _one_error_line(
      BASE + [f"--gin.MODEL_DIR={d}", "--gin.TRAIN_TOKENS=1000", "--gin.ModelConfig.D=32"],
      str(tmp_path),
  )
  assert code == 2 and len(lines) == 1, lines
  assert "holds a run with other settings: ModelConfig.D: 64 -> 32" in lines[0]


def test_empty_data_source_is_one_clear_line(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n\n")
  code, lines = _one_error_line(
      BASE
      + [
          "--gin.MODEL_DIR=m",
          "--gin.TRAIN_TOKENS=1000",
          "--gin.TrainConfig.data_source=@ByteFileSource",
          f"--gin.ByteFileSource.path={empty}",
      ],
      str(tmp_path),
  )
  assert code == 2 and len(lines) == 1, lines
  assert f"{empty}: empty data source" in lines[0]
