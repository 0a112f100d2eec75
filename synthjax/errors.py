"""One error type for bad user input, and the wrapper that turns it into one clear line."""
import functools
import sys


class UserError(Exception):
  """Bad input (a file, a field, a value): the message alone says what is wrong."""


def exit_on_user_error(prog: str):
  """Decorator for a binary's main: a UserError becomes `prog: error: message` and exit 2."""
  def wrap(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
      try:
        return fn(*args, **kwargs)
      except UserError as e:
        # gin appends "In call to configurable ..." lines; the first line says it all.
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    return run
  return wrap
