"""One writer per folder (synthjax.lease): on a local disk and on the GCS emulator, a second
holder is refused with one line naming the first, and a dead holder's lease is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from synthjax import lease, storage
from synthjax.errors import UserError
from tests import gcs_emulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_local_second_holder_is_refused_until_the_first_ends(tmp_path):
  with lease.Lease(str(tmp_path), "a training run"):
    with pytest.raises(
        UserError,
        match=rf"{tmp_path} is in use by a training run on host "
        rf"\S+ \(pid {os.getpid()}, for \d+s\); it is free ",
    ):
      with lease.Lease(str(tmp_path), "another run"):
        pass
  assert os.listdir(tmp_path) == []  # the lease file goes with its holder
  with lease.Lease(str(tmp_path), "another run"):
    assert json.loads((tmp_path / "lease.json").read_text())["what"] == "another run"


def test_local_lease_of_a_killed_process_is_free_at_once(tmp_path):
  holder = subprocess.Popen(
      [
          sys.executable,
          "-c",
          "import sys, time; from synthjax import lease\n"
          "with lease.Lease(sys.argv[1], 'a holder'):\n  print('held', flush=True); time.sleep(600)",
          str(tmp_path),
      ],
      stdout=subprocess.PIPE,
      text=True,
      env=dict(os.environ, PYTHONPATH=REPO),
  )
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(UserError, match=rf"pid {holder.pid}"):
    with lease.Lease(str(tmp_path), "a second"):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with lease.Lease(str(tmp_path), "a rerun"):  # no ttl to wait out: the kernel freed the lock
    pass


@pytest.fixture(scope="module")
def bucket():
  pytest.importorskip("gcp_storage_emulator")
  with gcs_emulator.serving("leases"):
    yield "gs://leases"


def test_store_second_holder_refused_and_a_lost_lease_stops_its_holder(bucket):
  folder = f"{bucket}/run-a"
  with lease.Lease(folder, "a training run", ttl_s=4) as first:
    with pytest.raises(
        UserError,
        match=r"run-a is in use by a training run .* last heartbeat "
        r"\d+s ago\); a crashed holder's lease .* expires 4s",
    ):
      with lease.Lease(folder, "a second run"):
        pass
    first.check()  # still its own
    # another process that took the lease over (having found this one dead) owns it now
    storage.write_text(
        f"{folder}/lease.json",
        json.dumps(
            {
                "owner": "someone-else",
                "host": "another-host",
                "pid": 1,
                "what": "x",
                "ttl_s": 60,
                "heartbeat": time.time(),
            }
        ),
    )
    deadline = time.time() + 10
    while not first.lost and time.time() < deadline:
      time.sleep(0.05)
    with pytest.raises(UserError, match="the lease was taken over by another process"):
      first.check()
  # its holder is gone from the store now, not from under the other owner's feet
  assert json.loads(storage.read_text(f"{folder}/lease.json"))["owner"] == "someone-else"


@pytest.mark.parametrize(
    "host,age,taken",
    [
        ("another-host", 5, False),  # alive elsewhere: refused
        ("another-host", 120, True),  # its heartbeat is older than its ttl (60 s): dead
        ("this-host", 5, True),  # on this host and its process is gone: dead at once
    ],
)
def test_store_lease_of_a_dead_holder_is_taken_over(bucket, host, age, taken):
  folder = f"{bucket}/run-{host}-{age}"
  dead_pid = subprocess.run(
      [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
  ).stdout.strip()
  storage.write_text(
      f"{folder}/lease.json",
      json.dumps(
          {
              "owner": "old",
              "host": socket.gethostname() if host == "this-host" else host,
              "pid": int(dead_pid),
              "what": "an old run",
              "ttl_s": 60,
              "heartbeat": time.time() - age,
          }
      ),
  )
  if not taken:
    with pytest.raises(UserError, match=r"in use by an old run on host another-host"):
      with lease.Lease(folder, "a new run"):
        pass
    return
  with lease.Lease(folder, "a new run"):
    assert json.loads(storage.read_text(f"{folder}/lease.json"))["what"] == "a new run"
  assert not storage.exists(f"{folder}/lease.json")


@pytest.mark.parametrize("wait_s,taken", [(0, False), (8, True)])
def test_a_retry_waits_out_the_lease_of_a_holder_lost_elsewhere(bucket, monkeypatch, wait_s, taken):
  """Work retried after its machine was lost finds the lost holder's lease still fresh: told
  to wait (WAIT_ENV), it takes the folder once the heartbeat is older than the ttl."""
  folder = f"{bucket}/retry-{wait_s}"
  storage.write_text(
      f"{folder}/lease.json",
      json.dumps(
          {
              "owner": "lost",
              "host": "a-lost-host",
              "pid": 1,
              "what": "a generation part",
              "ttl_s": 3,
              "heartbeat": time.time(),
          }
      ),
  )
  monkeypatch.setenv(lease.WAIT_ENV, str(wait_s))
  t = time.time()
  if not taken:
    with pytest.raises(UserError, match=r"in use by a generation part on host a-lost-host"):
      with lease.Lease(folder, "the retry", ttl_s=3):
        pass
    assert time.time() - t < 3
    return
  with lease.Lease(folder, "the retry", ttl_s=3):
    assert json.loads(storage.read_text(f"{folder}/lease.json"))["what"] == "the retry"
  assert 3 <= time.time() - t < 8
