"""The sweep runner with real bash jobs: many at once, retries, state on disk, and nothing left
running after an interrupt (each job's EXIT trap, which deletes its VM, runs first)."""
import os
import signal
import subprocess
import sys
import time

from synthjax import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait_for_all_started(marks, n):
  """A job that succeeds only if all n jobs are running at the same time."""
  return (f"touch {marks}/$RANDOM$RANDOM\n"
          f"for _ in $(seq 200); do [ $(ls {marks} | wc -l) -ge {n} ] && exit 0; sleep 0.1; done\n"
          "exit 1\n")


def test_jobs_run_at_once_up_to_the_limit(tmp_path):
  marks = tmp_path / "marks"
  marks.mkdir()
  scripts = {f"job{i}": _wait_for_all_started(marks, 3) for i in range(3)}
  results = sweep.Sweep(str(tmp_path / "status"), parallel=3).run(scripts)
  assert results == {"job0": "done", "job1": "done", "job2": "done"}


def test_a_failed_job_is_retried_then_reported(tmp_path):
  count = tmp_path / "count"
  scripts = {
      "flaky": f"echo x >> {count}; [ $(wc -l < {count}) -ge 2 ]",  # fails once, then works
      "broken": "echo trying; exit 3",
      "fine": "true",
  }
  status = str(tmp_path / "status")
  results = sweep.Sweep(status, parallel=2, retries=2).run(scripts)
  assert results == {"flaky": "done", "broken": "failed", "fine": "done"}
  state = sweep.read_status(status)
  assert state["flaky"]["attempts"] == 2 and state["broken"]["attempts"] == 3
  assert state["broken"]["exit_code"] == 3
  assert open(state["broken"]["log"]).read().count("trying") == 3
  table = sweep.status_table(status, {"flaky": "gs://b/runs/flaky/run.json"})
  assert table.splitlines()[0] == f"sweep {status}: 2 done, 1 failed"
  assert "gs://b/runs/flaky/run.json" in table
  # a rerun of the sweep runs only what is not done
  again = sweep.Sweep(status, parallel=2, retries=0).run({**scripts, "broken": "true"})
  assert again == {"flaky": "done", "broken": "done", "fine": "done"}
  assert sweep.read_status(status)["fine"]["attempts"] == 1


def test_an_interrupted_sweep_lets_every_job_clean_up_and_leaves_nothing_running(tmp_path):
  cleaned = tmp_path / "cleaned"
  job = (f"trap 'echo $JOB >> {cleaned}' EXIT\ntrap 'exit 143' TERM\n"
         f"touch {tmp_path}/started-$JOB\nsleep 287 & wait\n")
  code = (f"import sys; sys.path.insert(0, {REPO!r}); from synthjax import sweep; "
          f"r = sweep.Sweep({str(tmp_path / 'status')!r}, parallel=2).run("
          f"{{'a': 'JOB=a; ' + {job!r}, 'b': 'JOB=b; ' + {job!r}}}); print(r)")
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  deadline = time.time() + 60
  while time.time() < deadline and len(list(tmp_path.glob("started-*"))) < 2:
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert sorted(cleaned.read_text().split()) == ["a", "b"]  # both EXIT traps ran
  assert eval(out.strip()) == {"a": "failed", "b": "failed"}
  left = subprocess.run(["pgrep", "-f", "sleep 287"], capture_output=True, text=True).stdout
  assert left.strip() == ""
  state = sweep.read_status(str(tmp_path / "status"))
  assert {s["state"] for s in state.values()} == {"failed"}
  assert all(s["attempts"] == 1 for s in state.values())  # no retry after an interrupt
