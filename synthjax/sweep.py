"""Run a sweep of jobs as researchers do: many at once, each retried a set number of times,
its state on disk, nothing left running when the sweep ends or is interrupted.

A job is a bash script (launchers.py builds them: one per backend). Each runs in its own
process group; on an interrupt (SIGINT, SIGTERM) the sweep sends SIGTERM to every running
job and waits for it, so the job's own EXIT trap (which deletes its TPU VM, or stops its other
hosts) runs before the sweep exits.

    STATUS_DIR/<job>.json   {"state": queued|running|done|failed, "attempts": n, "log": ...,
                             "script": digest}: a done job whose script changed runs again
    STATUS_DIR/<job>.log    the job's output, every attempt appended
"""
import concurrent.futures
import json
import os
import signal
import subprocess
import threading
import time
from typing import Dict, Optional

from synthjax import atomic


class Sweep:

  def __init__(self, status_dir: str, parallel: int = 1, retries: int = 0):
    if parallel < 1 or retries < 0:
      from synthjax.errors import UserError
      raise UserError(f"--parallel must be at least 1 and --retries at least 0, got "
                      f"{parallel} and {retries}")
    self.status_dir, self.parallel, self.retries = status_dir, parallel, retries
    self._running: Dict[str, subprocess.Popen] = {}
    self._lock = threading.Lock()
    self._stopping = False

  def _status(self, name: str, **fields) -> None:
    path = os.path.join(self.status_dir, f"{name}.json")
    old = read_status(self.status_dir).get(name, {})
    atomic.write_json(path, {**old, **fields, "updated": time.time()})

  def _run_one(self, name: str, script: str) -> str:
    log = os.path.join(self.status_dir, f"{name}.log")
    for attempt in range(1, self.retries + 2):
      if self._stopping:
        break
      self._status(name, state="running", attempts=attempt, log=log)
      with open(log, "a") as out:
        out.write(f"=== attempt {attempt} ===\n")
        out.flush()
        proc = subprocess.Popen(["bash", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with self._lock:
          self._running[name] = proc
        code = proc.wait()
        with self._lock:
          self._running.pop(name, None)
        try:  # whatever the job started and left behind in its group goes with it
          os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
          pass
      if code == 0:
        self._status(name, state="done", exit_code=0)
        return "done"
      self._status(name, state="failed", exit_code=code)
    return "failed"

  def _stop_all(self, *_):
    """Every running job gets SIGTERM and time to clean up (delete its VM)."""
    self._stopping = True
    with self._lock:
      running = list(self._running.values())
    for proc in running:
      try:
        os.killpg(proc.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass

  def run(self, scripts: Dict[str, str]) -> Dict[str, str]:
    """Run every job (name -> bash script); returns name -> 'done' | 'failed'."""
    os.makedirs(self.status_dir, exist_ok=True)
    status = read_status(self.status_dir)
    todo = {n: s for n, s in scripts.items()  # done, unless its script changed since
            if status.get(n, {}).get("state") != "done"
            or status[n].get("script") != _digest(s)}
    for name, script in todo.items():
      self._status(name, state="queued", attempts=0, script=_digest(script))
    handlers = {s: signal.signal(s, self._stop_all) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
      with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
        futures = {pool.submit(self._run_one, n, s): n for n, s in todo.items()}
        results = {futures[f]: f.result() for f in concurrent.futures.as_completed(futures)}
    finally:
      for s, h in handlers.items():
        signal.signal(s, h)
    done = {n: "done" for n in scripts if n not in todo}
    return {**done, **results}


def _digest(script: str) -> str:
  import hashlib
  return hashlib.sha256(script.encode()).hexdigest()[:16]


def read_status(status_dir: str) -> Dict[str, dict]:
  out = {}
  if os.path.isdir(status_dir):
    for f in sorted(os.listdir(status_dir)):
      if f.endswith(".json"):
        with open(os.path.join(status_dir, f)) as fh:
          out[f[:-len(".json")]] = json.load(fh)
  return out


def status_table(status_dir: str, records: Optional[Dict[str, str]] = None) -> str:
  """One line per job: state, attempts, and where its run record is (or its log)."""
  rows = read_status(status_dir)
  counts = {}
  lines = []
  for name, st in rows.items():
    counts[st.get("state")] = counts.get(st.get("state"), 0) + 1
    where = (records or {}).get(name) if st.get("state") == "done" else st.get("log")
    lines.append(f"{st.get('state', '?'):8s} {st.get('attempts', 0)} {name}  {where or ''}")
  head = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
  return "\n".join([f"sweep {status_dir}: {head or 'no jobs'}"] + lines)
