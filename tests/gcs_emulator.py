"""A GCS server on loopback for the object-store tests: PyPI's gcp-storage-emulator, in memory.

    python tests/gcs_emulator.py PORT        # or, in a test: with serving() as host: ...

Its HTTP server answers one request at a time, with the standard library's listen backlog of
5 and no timeout: the clients here (tensorstore under orbax, gcsfs) open dozens of connections
at once, so the kernel dropped most (each then waited out a TCP retry: a checkpoint took a
minute), and one stalled connection stalled every client (a training job hung). Here each
connection gets a thread (a long backlog, a timeout) and requests still run one at a time
(its in-memory store is not thread-safe: concurrent resumable uploads lost objects). In
memory, the store's metadata is not serialized after every write (only a restart reads it
back): that made each write cost O(objects), and a checkpoint of a tiny model 20-50 s.
"""

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time


class _ThreadedHTTPServer(http.server.ThreadingHTTPServer):
  request_queue_size = 1024
  daemon_threads = True


_ONE_AT_A_TIME = threading.Lock()


def _one_at_a_time(method):
  @functools.wraps(method)
  def run(self):
    with _ONE_AT_A_TIME:
      method(self)

  return run


def main():
  from gcp_storage_emulator import server as emulator
  from gcp_storage_emulator import storage as emulator_storage

  http.server.HTTPServer = _ThreadedHTTPServer  # the server the emulator builds (this process)
  handler = emulator.RequestHandler
  handler.timeout = 60
  emulator_storage.Storage._write_config_to_file = lambda self: None
  for name in ("do_GET", "do_POST", "do_PUT", "do_PATCH", "do_DELETE"):
    setattr(handler, name, _one_at_a_time(getattr(handler, name)))
  emulator.Server("127.0.0.1", int(sys.argv[1]), in_memory=True).run()


@contextlib.contextmanager
def serving(bucket: str = "bkt"):
  """The emulator in a process of its own, with `bucket` made; this process's clients (gcsfs,
  tensorstore) and the processes it starts point at it. Yields its URL."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), str(port)],
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 60
  while time.time() < deadline:
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        break
    time.sleep(0.2)
  host = f"http://127.0.0.1:{port}"
  os.environ["STORAGE_EMULATOR_HOST"] = host
  os.environ["TENSORSTORE_GCS_HTTP_URL"] = host
  try:
    import fsspec

    fsspec.filesystem("gs").mkdir(bucket)
    yield host
  finally:
    os.environ.pop("STORAGE_EMULATOR_HOST")
    os.environ.pop("TENSORSTORE_GCS_HTTP_URL")
    proc.terminate()
    proc.wait()


if __name__ == "__main__":
  main()
