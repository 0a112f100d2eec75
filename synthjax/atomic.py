"""Write-to-temporary-then-rename, so a killed job never leaves a half-written output."""

import contextlib
import json
import os
import shutil
import tempfile


def write_text(path: str, text: str) -> None:
  from synthjax import storage  # one implementation: a temporary file renamed into place

  storage.write_text(path, text)


def write_json(path: str, obj) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def directory(path: str, overwrite: bool = False):
  """Yield a temporary sibling folder; on success it becomes `path`, on any error it is removed."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp")
  try:
    yield tmp
    if os.path.exists(path):
      if not overwrite:
        from synthjax.errors import UserError

        raise UserError(f"{path} already exists; pass --overwrite to replace it")
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
