"""Every path synthjax touches goes through here: local paths and object-store URLs (gs://,
s3://, memory://) alike, through fsspec (gcsfs for gs://).

Writes that must never be seen half-done are whole-object writes: on a local disk a temporary
file renamed into place, on an object store one upload (an object appears whole or not at all;
rename is not atomic there). Folders that must appear whole are committed by a marker or a
manifest written last.

A GCS emulator on loopback (tests) is reached by setting STORAGE_EMULATOR_HOST; tf.io.gfile
cannot reach one, so nothing here goes through it, and orbax's paths (etils.epath) are routed
to fsspec too.
"""

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import socket
import tempfile
import urllib.parse
from typing import List, Sequence, Tuple

# Before gcsfs or etils.epath are imported or used: plain GCS buckets (gcsfs's default probes
# each bucket for zonal/hierarchical layouts over gRPC, and waits 60 s where that is absent),
# and epath through fsspec rather than tf.io.gfile.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
os.environ.setdefault("EPATH_USE_TF", "false")
if os.environ.get("STORAGE_EMULATOR_HOST"):  # orbax writes arrays with tensorstore
  os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", os.environ["STORAGE_EMULATOR_HOST"])

import logging  # noqa: E402

import fsspec  # noqa: E402

from synthjax.errors import UserError  # noqa: E402

# gcsfs logs a traceback per exhausted retry; the one line from _edge says it instead.
logging.getLogger("gcsfs").setLevel(logging.CRITICAL)


def is_remote(path: str) -> bool:
  return "://" in str(path) and not str(path).startswith("file://")


def _endpoint(protocol: str):
  """(host, port) a store's client connects to, where known; None under a proxy (whose own
  reach is not ours to test) or for stores without one (memory://)."""
  if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
    return None
  if protocol in ("gs", "gcs"):
    url = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
  elif protocol in ("s3", "s3a"):
    url = (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "https://s3.amazonaws.com"
    )
  else:
    return None
  parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
  return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


_REACHED: set = set()  # endpoints this process has probed
PROBE_TIMEOUT_S = 5.0


def _probe(path: str) -> None:
  """One TCP connection to the store's endpoint, once per process and endpoint: an
  unreachable store is one line within seconds, before any work, instead of after the
  client's minute of retries."""
  endpoint = _endpoint(str(path).split("://", 1)[0])
  if endpoint is None or endpoint in _REACHED:
    return
  try:
    socket.create_connection(endpoint, timeout=PROBE_TIMEOUT_S).close()
  except OSError as e:
    raise UserError(
        f"{path}: cannot reach the object store at {endpoint[0]}:{endpoint[1]} "
        f"({e.strerror or e or 'no answer'})"
    ) from None
  _REACHED.add(endpoint)


def filesystem(path: str) -> Tuple[fsspec.AbstractFileSystem, str]:
  """(filesystem, path within it)."""
  try:
    if is_remote(path):  # no cached listings: other jobs and hosts write here too
      _probe(path)
      return fsspec.core.url_to_fs(str(path), use_listings_cache=False)
    return fsspec.core.url_to_fs(str(path))
  except (ImportError, ValueError) as e:
    raise UserError(f"{path}: no storage backend for this URL ({e})") from None


def join(*parts: str) -> str:
  return posixpath.join(*parts) if is_remote(parts[0]) else os.path.join(*parts)


def abspath(path: str) -> str:
  return str(path) if is_remote(path) else os.path.abspath(path)


def dirname(path: str) -> str:
  return (
      posixpath.dirname(str(path).rstrip("/"))
      if is_remote(path)
      else os.path.dirname(os.path.abspath(path))
  )


def basename(path: str) -> str:
  return posixpath.basename(str(path).rstrip("/"))


def _url(fs, path: str, like: str) -> str:
  """A path the filesystem returned, back as a URL of the same scheme as `like`."""
  return fs.unstrip_protocol(path) if is_remote(like) else path


@contextlib.contextmanager
def _edge(path: str):
  """Store errors (no network, no bucket, no permission) as one line naming the path."""
  try:
    yield
  except (UserError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError):
    raise
  except PermissionError as e:
    raise UserError(f"{path}: permission denied ({e.strerror or e})") from None
  except OSError as e:
    if not is_remote(path):
      raise UserError(f"{path}: {e.strerror or e}") from None
    raise UserError(f"{path}: cannot reach the object store ({_short(e)})") from None
  except Exception as e:  # network clients raise their own types (aiohttp, google.auth)
    if not is_remote(path):
      raise
    raise UserError(f"{path}: cannot reach the object store ({_short(e)})") from None


def _short(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def exists(path: str) -> bool:
  fs, p = filesystem(path)
  with _edge(path):
    return fs.exists(p)


def isdir(path: str) -> bool:
  fs, p = filesystem(path)
  with _edge(path):
    return fs.isdir(p)


def isfile(path: str) -> bool:
  fs, p = filesystem(path)
  with _edge(path):
    return fs.isfile(p)


def glob(pattern: str) -> List[str]:
  """Sorted files matching a glob (** recursive), as URLs when the pattern is one."""
  fs, p = filesystem(pattern)
  with _edge(pattern):
    found = fs.glob(p) if any(c in p for c in "*?[") else ([p] if fs.exists(p) else [])
    return sorted(_url(fs, f, pattern) for f in found if fs.isfile(f))


def listdir(path: str) -> List[str]:
  """Names (not paths) in a folder; [] when it does not exist."""
  fs, p = filesystem(path)
  with _edge(path):
    if not fs.exists(p):
      return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False))


def makedirs(path: str) -> None:
  """A folder (object stores have none: a no-op there)."""
  if is_remote(path):
    return
  with _edge(path):
    os.makedirs(path, exist_ok=True)


def open_file(path: str, mode: str = "rb"):
  fs, p = filesystem(path)
  with _edge(path):
    return fs.open(p, mode)


def read_bytes(path: str) -> bytes:
  fs, p = filesystem(path)
  with _edge(path):
    return fs.cat_file(p)


def read_ranges(paths: Sequence[str], starts: Sequence[int], stops: Sequence[int]) -> List[bytes]:
  """Bytes [starts[k], stops[k]) of paths[k], all on one store: on an object store the ranged
  reads run concurrently (fsspec's cat_ranges), so a batch of documents costs about one round
  trip rather than one each."""
  if not paths:
    return []
  fs, _ = filesystem(paths[0])
  within = {p: filesystem(p)[1] for p in set(paths)}
  with _edge(paths[0]):
    found = fs.cat_ranges([within[p] for p in paths], list(starts), list(stops), on_error="return")
  for path, got in zip(paths, found):
    if isinstance(got, BaseException):
      with _edge(path):
        raise got
  return found


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def read_json(path: str):
  try:
    return json.loads(read_text(path))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None


def write_bytes(path: str, data: bytes) -> None:
  """The whole object or nothing: a reader never sees part of it."""
  if is_remote(path):
    fs, p = filesystem(path)
    with _edge(path):
      try:
        fs.pipe_file(p, data)
      except FileNotFoundError:
        raise UserError(f"{path}: no such bucket") from None
    return
  directory = os.path.dirname(os.path.abspath(path))
  with _edge(path):
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_folder(path: str, overwrite: bool = False):
  """A local folder that appears whole or not at all: yields a temporary sibling to fill; on
  success it is renamed to `path`, on any error removed."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp")
  try:
    yield tmp
    if os.path.exists(path):
      if not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def upload(local_path: str, path: str) -> None:
  """Copy a finished local file to `path` whole (local: copied, then renamed into place)."""
  if not is_remote(path):
    with open(local_path, "rb") as f:
      write_bytes(path, f.read())
    return
  fs, p = filesystem(path)
  with _edge(path):
    fs.put_file(local_path, p)


def remove(path: str) -> None:
  fs, p = filesystem(path)
  with _edge(path), contextlib.suppress(FileNotFoundError):
    fs.rm_file(p)


def remove_tree(path: str) -> None:
  """A file or a folder with everything in it; nothing when it does not exist."""
  fs, p = filesystem(path)
  with _edge(path):
    if fs.exists(p):
      fs.rm(p, recursive=True)


def remove_empty_folder(path: str) -> None:
  """A local folder that holds nothing (object stores have no folders)."""
  if not is_remote(path):
    with contextlib.suppress(OSError):
      os.rmdir(path)


def stamp(path: str) -> list:
  """What says a file changed without reading it: size plus the store's checksum, generation
  or modification time."""
  fs, p = filesystem(path)
  with _edge(path):
    info = fs.info(p)
  mark = next(
      (
          info[k]
          for k in ("crc32c", "md5Hash", "ETag", "generation", "mtime", "created")
          if info.get(k) is not None
      ),
      None,
  )
  if is_remote(path) is False and mark is None:
    mark = os.stat(path).st_mtime_ns
  return [basename(path), int(info.get("size") or 0), str(mark)]


def local_copy(path: str) -> str:
  """A local file with `path`'s bytes, for readers that only take local files (ArrayRecord,
  SentencePiece): the path itself when local, else a copy downloaded once per content stamp
  under SYNTHJAX_LOCAL_CACHE (default ~/.cache/synthjax/store)."""
  if not is_remote(path):
    return path
  key = hashlib.sha256(json.dumps([path, stamp(path)]).encode()).hexdigest()[:16]
  root = os.environ.get("SYNTHJAX_LOCAL_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "synthjax", "store"
  )
  local = os.path.join(root, key, basename(path))
  if not os.path.exists(local):
    os.makedirs(os.path.dirname(local), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(local), prefix=".download")
    os.close(fd)
    fs, p = filesystem(path)
    try:
      with _edge(path):
        fs.get_file(p, tmp)
      os.replace(tmp, local)
    finally:
      with contextlib.suppress(OSError):
        os.unlink(tmp)
  return local


def local_folder(path: str) -> str:
  """A local copy of a folder tree (a model directory for readers that take local paths),
  like local_copy: the path itself when local, else downloaded once per stamp of its
  model.json."""
  if not is_remote(path):
    return path
  key = hashlib.sha256(json.dumps([path, stamp(join(path, "model.json"))]).encode())
  root = os.environ.get("SYNTHJAX_LOCAL_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "synthjax", "store"
  )
  local = os.path.join(root, key.hexdigest()[:16], basename(path.rstrip("/")))
  if not os.path.exists(local):
    os.makedirs(os.path.dirname(local), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(local), prefix=".download")
    fs, p = filesystem(path)
    try:
      with _edge(path):
        fs.get(p.rstrip("/") + "/", tmp + "/", recursive=True)
      os.replace(tmp, local)
    finally:
      shutil.rmtree(tmp, ignore_errors=True)
  return local


def check_writable(path: str) -> None:
  """Fail now, with one line, if a folder could not be written (a file in the way, no
  permission, no bucket, store unreachable); creates nothing."""
  if not is_remote(path):
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
      raise UserError(f"{path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
      raise UserError(f"{path}: {existing} is not writable")
    return
  probe = join(path, f".synthjax-write-probe-{os.getpid()}")
  write_bytes(probe, b"")
  remove(probe)
