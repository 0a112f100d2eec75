"""One error type for bad user input, and the edge of every binary: whatever goes wrong
becomes one line on stderr (the full traceback only with --verbose)."""

import argparse
import dataclasses
import functools
import os
import sys


class UserError(Exception):
  """Bad input (a file, a field, a value): the message alone says what is wrong."""


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one line (through the binary's edge) instead of the
  usage text plus the error."""

  def error(self, message):
    raise UserError(f"{message} (see --help)")


def check_field_types(cfg) -> None:
  """Gin passes values through untyped: a dataclass config's int, float, str and bool fields
  hold what their annotations promise (a string 'false' never reaches a bool field)."""
  simple = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    kind = f.type if isinstance(f.type, type) else None  # a string annotation: not checked
    allowed = simple.get(kind) if kind else None
    if (
        kind
        and allowed
        and (not isinstance(value, allowed) or (kind is not bool and isinstance(value, bool)))
    ):
      raise UserError(f"{type(cfg).__name__}.{f.name} must be {kind.__name__}, got {value!r}")


def _first_line(e: BaseException) -> str:
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[0] if lines else ""


def describe(e: BaseException) -> str:
  """One line for an error a library raised: the file it names, or its type and message."""
  if isinstance(e, OSError) and e.filename:
    return f"{e.filename}: {e.strerror or _first_line(e)}"
  return f"{type(e).__name__}: {_first_line(e)[:300]}"


def _exit(code: int, whole_process: bool):
  """Exit after the one error line. A binary run as a program closes fd 2 to what follows:
  libraries' threads cut short by the error (orbax's cancelled writes) print tracebacks while
  Python shuts down. Called in a process that goes on (a test), it only raises SystemExit."""
  if whole_process:
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
  sys.exit(code)


def exit_on_user_error(prog: str):
  """Decorator for a binary's main(argv=None). A UserError becomes `prog: error: message`
  (exit 2); any other error one line naming it (exit 1), or its traceback with --verbose."""

  def wrap(fn):
    @functools.wraps(fn)
    def run(argv=None):
      whole_process = argv is None
      argv = list(sys.argv[1:] if argv is None else argv)
      verbose = "--verbose" in argv
      argv = [a for a in argv if a != "--verbose"]
      try:
        return fn(argv)
      except UserError as e:
        if verbose:
          raise
        # gin appends "In call to configurable ..." lines; the first line says it all.
        print(f"{prog}: error: {_first_line(e) or type(e).__name__}", file=sys.stderr, flush=True)
        _exit(2, whole_process)
      except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
      except Exception as e:  # a library's error: one line, the traceback on request
        if verbose:
          raise
        print(
            f"{prog}: error: {describe(e)} (rerun with --verbose for the traceback)",
            file=sys.stderr,
            flush=True,
        )
        _exit(1, whole_process)

    return run

  return wrap
