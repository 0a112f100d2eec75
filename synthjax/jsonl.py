"""Reading JSON Lines with errors that name the file, the line and the problem."""

import json
from typing import Iterator, Tuple

from synthjax import storage
from synthjax.errors import UserError


def records(path: str) -> Iterator[Tuple[int, object]]:
  """(line number, parsed JSON) for each non-blank line."""
  with storage.open_file(path, "rb") as f:
    for i, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise UserError(f"{path}:{i}: invalid UTF-8 at byte {e.start} of the line") from None
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise UserError(f"{path}:{i}: invalid JSON ({e.msg})") from None
      yield i, rec
