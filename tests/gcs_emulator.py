"""A GCS server on loopback for the object-store tests: PyPI's gcp-storage-emulator, in memory.

    python tests/gcs_emulator.py PORT

Its HTTP server answers one request at a time, with the standard library's listen backlog of
5 and no timeout: the clients here (tensorstore under orbax, gcsfs) open dozens of connections
at once, so the kernel dropped most (each then waited out a TCP retry: a checkpoint took a
minute), and one stalled connection stalled every client (a training job hung). Here each
connection gets a thread (a long backlog, a timeout) and requests still run one at a time
(its in-memory store is not thread-safe: concurrent resumable uploads lost objects). In
memory, the store's metadata is not serialized after every write (only a restart reads it
back): that made each write cost O(objects), and a checkpoint of a tiny model 20-50 s.
"""
import functools
import http.server
import sys
import threading

from gcp_storage_emulator import server as emulator
from gcp_storage_emulator import storage as emulator_storage


class _ThreadedHTTPServer(http.server.ThreadingHTTPServer):
  request_queue_size = 1024
  daemon_threads = True


def _one_at_a_time(method, lock=threading.Lock()):
  @functools.wraps(method)
  def run(self):
    with lock:
      method(self)
  return run


def main():
  http.server.HTTPServer = _ThreadedHTTPServer  # the server the emulator builds (this process)
  handler = emulator.RequestHandler
  handler.timeout = 60
  emulator_storage.Storage._write_config_to_file = lambda self: None
  for name in ("do_GET", "do_POST", "do_PUT", "do_PATCH", "do_DELETE"):
    setattr(handler, name, _one_at_a_time(getattr(handler, name)))
  emulator.Server("127.0.0.1", int(sys.argv[1]), in_memory=True).run()


if __name__ == "__main__":
  main()
