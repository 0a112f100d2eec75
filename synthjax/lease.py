"""One writer per folder: a lease object (owner, host, pid, heartbeat) taken before the first
write to a run's, a study's or a generation job's folder, renewed while the work runs and
removed when it ends.

A second process that finds a live lease stops with one line naming the holder.

On a local disk the lease file is also locked (flock): the kernel drops the lock when its
process dies however it dies, so a rerun after a kill takes the folder at once. On an object
store the lease is an object whose heartbeat the holder renews; it is dead when the heartbeat
is older than its ttl (a crashed holder on another machine), or at once when its holder ran on
this host and that process is gone. An object store has no exclusive create through fsspec, so
the lease is written, left to settle, and read back: of two writers inside the window the
later write wins, and the earlier one sees it on reading back and stops.
"""

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from typing import Any, Dict

from synthjax import storage
from synthjax.errors import UserError

TTL_S = 60.0  # object stores: a holder that has not renewed for this long is taken to be dead
SETTLE_S = 1.0  # object stores: how long a racing write may take to land
# Seconds to wait for a live-looking lease to go before refusing: set for a retry of work whose
# holder was lost on another machine, whose lease lives until its ttl runs out.
WAIT_ENV = "SYNTHJAX_LEASE_WAIT_S"
RETRY_WAIT_S = TTL_S + 15.0  # what such a retry waits: a lost holder's lease lapses within it


class Lease:
  """`with Lease(folder, what):` holds `folder/name` for the block's duration."""

  def __init__(self, folder: str, what: str, name: str = "lease.json", ttl_s: float = TTL_S):
    self.path = storage.join(folder, name)
    self.ttl_s = ttl_s
    self.mine: Dict[str, Any] = {
        "owner": uuid.uuid4().hex,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "what": what,
        "ttl_s": ttl_s,
    }
    self.lost = False  # set when another process took the lease over (this one was presumed dead)
    self._stop = threading.Event()
    self._thread = None
    self._fd = None  # local disks: the locked lease file

  def __enter__(self):
    self._take()
    if self._fd is None:  # an object store's lease lives by its heartbeat
      self._thread = threading.Thread(target=self._renew, daemon=True, name="lease-renew")
      self._thread.start()
    return self

  def __exit__(self, *exc):
    if self._fd is not None:  # removed while still locked, so no one locks a removed file
      os.unlink(self.path)
      os.close(self._fd)
      return False
    self._stop.set()
    self._thread.join()
    held = self._read()
    if held and held.get("owner") == self.mine["owner"]:
      storage.remove(self.path)
    return False

  def _body(self) -> bytes:
    return json.dumps(dict(self.mine, heartbeat=time.time()), sort_keys=True).encode()

  def _read(self):
    try:
      return json.loads(storage.read_bytes(self.path))
    except (FileNotFoundError, UserError, ValueError):
      return None  # gone, or half-written by a crashed local writer: nobody holds it

  def _refuse(self, held: dict):
    age = time.time() - held.get("heartbeat", 0)
    who = (
        f"{storage.dirname(self.path)} is in use by {held.get('what', 'another process')} "
        f"on host {held.get('host')} (pid {held.get('pid')}"
    )
    if storage.is_remote(self.path):
      raise UserError(
          f"{who}, last heartbeat {age:.0f}s ago); a crashed holder's lease "
          f"({self.path}) expires {held.get('ttl_s', self.ttl_s):.0f}s after its "
          "last heartbeat, or at once on its own host"
      )
    raise UserError(f"{who}, for {age:.0f}s); it is free again when that process ends")

  def _dead(self, held: dict) -> bool:
    if time.time() - held.get("heartbeat", 0) > held.get("ttl_s", self.ttl_s):
      return True
    return held.get("host") == self.mine["host"] and not _alive(held.get("pid"))

  def _take(self):
    if not storage.is_remote(self.path):
      return self._lock_local()
    held = self._read()
    give_up = time.time() + float(os.environ.get(WAIT_ENV) or 0)
    while held and not self._dead(held):
      if time.time() >= give_up:
        self._refuse(held)
      time.sleep(min(5.0, self.ttl_s / 4, max(0.0, give_up - time.time())))
      held = self._read()
    storage.write_bytes(self.path, self._body())
    time.sleep(SETTLE_S)
    held = self._read()
    if not held or held.get("owner") != self.mine["owner"]:
      self._refuse(held or {})

  def _lock_local(self):
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        time.sleep(0.1)  # the holder may have created the file and not yet written it
        self._refuse(self._read() or {})
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:  # else the holder removed it between our open and lock: open the new one
        os.ftruncate(fd, 0)
        os.write(fd, self._body())
        self._fd = fd
        return
      os.close(fd)

  def _renew(self):
    while not self._stop.wait(self.ttl_s / 4):
      held = self._read()
      if held and held.get("owner") != self.mine["owner"]:
        self.lost = True
        return
      try:
        storage.write_bytes(self.path, self._body())
      except UserError:  # a blip of the store: the next renewal may reach it within the ttl
        continue

  def check(self):
    """Stop the work (one line) when another process has taken the lease over."""
    if self.lost:
      raise UserError(
          f"{self.path}: the lease was taken over by another process (this one "
          f"did not renew it within {self.ttl_s:.0f}s); stopping so that only one "
          "writes here"
      )


def holder(folder: str, name: str = "lease.json"):
  """The lease now on `folder` (owner, host, pid, what, heartbeat), or None."""
  return Lease(folder, "", name)._read()


def _alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, TypeError, ValueError):
    return True  # someone else's process, or no pid recorded: assume alive
  return True
