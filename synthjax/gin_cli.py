"""t5x-style command lines shared by every binary.

    python -m synthjax.train --gin_file=gin_configs/train/micro.gin \
        --gin.MODEL_DIR=/tmp/run --gin.TRAIN_TOKENS=1000000

`--gin_file` repeats; `--gin.NAME=value` binds a macro or parameter (a bare word or path is
taken as a string, so quoting is optional); `--gin_search_paths` lists folders that
`--gin_file` and gin `include` statements are resolved against, after the working directory
(gin_configs/ always is).
Errors in the config (unknown name, unparsable value, missing required macro, missing file)
become one line naming the problem.
"""

import ast
import io
import logging
import os
import re
import tokenize
from typing import Callable, List, Optional, Sequence

import gin

from synthjax.errors import UserError

# The presets: in a wheel they are package data (synthjax/gin_configs, mapped there by
# setup.py); in a source checkout or an editable install, the repository's top-level folder.
_PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gin_configs")
_CHECKOUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin_configs")
GIN_CONFIGS = _PACKAGED if os.path.isdir(_PACKAGED) else _CHECKOUT

_ADDED_SEARCH_PATHS: List[str] = []  # gin's search list only grows; each folder goes in once

_WORDS = {"true": "True", "false": "False", "none": "None"}


def _gin_value(value: str) -> str:
  """Quote a bare word or path so `--gin.MODEL_DIR=/tmp/x` works without shell quoting;
  true/false/none in any case are the Python constants; Python literals, gin references
  (@name, %MACRO) and containers pass through."""
  if value.strip().lower() in _WORDS:
    return _WORDS[value.strip().lower()]
  if value.lstrip().startswith(("@", "%", "[", "{", "(")):
    return value
  try:
    ast.literal_eval(value.strip())
    return value
  except (ValueError, SyntaxError):
    return repr(value)


def _default_type(name: str):
  """The type (bool, int or float) a parameter 'scope/Configurable.param' takes by its
  default or annotation; None for macros, strings and anything unknown."""
  import dataclasses
  import inspect

  if "." not in name:
    return None
  selector, param = name.rsplit(".", 1)
  try:
    fn = gin.get_configurable(selector.split("/")[-1])
  except (KeyError, ValueError):
    return None
  if dataclasses.is_dataclass(fn):
    field = {f.name: f for f in dataclasses.fields(fn)}.get(param)
    kind = field.type if field else None
  else:
    try:
      p = inspect.signature(fn).parameters.get(param)
    except (TypeError, ValueError):
      return None
    kind = type(p.default) if p is not None else None
  return kind if kind in (bool, int, float) else None


def check_bare_words(argv: Sequence[str]) -> None:
  """A bare word given to a number or boolean parameter is a mistake (it would bind the
  string): say which flag. Call after the configurables are registered (after parse)."""
  for arg in argv:
    name, eq, value = arg.partition("=")
    if not (name.startswith("--gin.") and eq):
      continue
    if _gin_value(value) == repr(value):  # it was quoted: a bare word
      kind = _default_type(name[len("--gin.") :])
      if kind is not None:
        raise UserError(
            f"{arg}: {name[len('--gin.'):]} takes {'an' if kind is int else 'a'} "
            f"{kind.__name__}, not the word "
            f"{value!r}" + (" (use true or false)" if kind is bool else "")
        )


def split_argv(argv: Sequence[str]):
  """Pull gin flags out of argv; returns (gin_files, bindings, search_paths, rest)."""
  files: List[str] = []
  bindings: List[str] = []
  paths: List[str] = []
  rest: List[str] = []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    name, eq, value = arg.partition("=")
    if name in ("--gin_file", "--gin_search_paths", "--gin_bindings") and not eq:
      if i + 1 >= len(args):
        raise UserError(f"{name} needs a value")
      value, i = args[i + 1], i + 1
    if name == "--gin_file":
      files.append(value)
    elif name == "--gin_search_paths":
      paths.extend(p for p in value.split(",") if p)
    elif name == "--gin_bindings":
      bindings.append(value)
    elif name.startswith("--gin."):
      if not eq:
        raise UserError(f"{arg}: expected --gin.NAME=value")
      bindings.append(f"{name[len('--gin.'):]} = {_gin_value(value)}")
    else:
      rest.append(arg)
    i += 1
  return files, bindings, paths, rest


def _resolve(path: str, search_paths: Sequence[str]) -> str:
  if os.path.isabs(path) or os.path.exists(path):
    return path
  for root in search_paths:
    candidate = os.path.join(root, path)
    if os.path.exists(candidate):
      return candidate
  raise UserError(f"gin file {path!r} not found (searched ., {', '.join(search_paths)})")


def parse(
    gin_files: Sequence[str], bindings: Sequence[str] = (), search_paths: Sequence[str] = ()
) -> None:
  """Clear gin, then parse files and bindings; any config error becomes a UserError."""
  search_paths = list(search_paths) + [GIN_CONFIGS]
  gin.clear_config()
  # gin searches the working directory, then these folders, in the order first added
  for folder in search_paths:
    if folder not in _ADDED_SEARCH_PATHS:
      gin.add_config_file_search_path(folder)
      _ADDED_SEARCH_PATHS.append(folder)
  files = [_resolve(f, search_paths) for f in gin_files]
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)  # gin logs every search path an include is not found in
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
  except TypeError as e:
    if "NoneType" not in str(e):
      raise UserError(f"bad gin config: {_one_line(e)}") from None
    # gin 0.5 takes the include's folder, when a folder of that name sits in the working
    # directory, for a Python package, and fails before it tries the search paths.
    raise UserError(
        f"bad gin config: {_one_line(e)}: an include's folder has the name of a folder in the "
        "working directory; write the include as './folder/file.gin'"
    ) from None
  except (ValueError, SyntaxError, IOError, KeyError) as e:
    raise UserError(f"bad gin config: {_one_line(e)}") from None
  except tokenize.TokenError as e:  # gin's tokenizer names neither the file nor the line
    raise UserError(
        f"bad gin config: {_unfinished_statement(files, bindings) or e.args[0]}"
    ) from None
  finally:
    root.setLevel(level)


def _unfinished_statement(files: Sequence[str], bindings: Sequence[str]) -> Optional[str]:
  """Where a statement that never ends (an unclosed bracket or string) starts: the first
  file or binding Python's tokenizer (which gin's parser uses) cannot finish."""
  sources = [(f, open(f).read()) for f in files] + [(None, b) for b in bindings]
  for name, text in sources:
    start = 1
    try:
      for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.NEWLINE:
          start = token.end[0] + 1
    except tokenize.TokenError as e:
      where = f"{name}, line {start}" if name else f"binding {text!r}"
      return f"{where}: {e.args[0]} (an unclosed bracket or string?)"
  return None


def _one_line(e: BaseException) -> str:
  text = str(e).strip()
  # gin appends "In file ..., line ..." context on further lines: keep it, on one line.
  return " ".join(line.strip() for line in text.splitlines() if line.strip())


def missing_required_macros() -> List[str]:
  """Macros still bound to %gin.REQUIRED (gin itself only checks REQUIRED on parameters, not
  on macros, so t5x-style run files need this), read from gin's own listing of the config."""
  return sorted(
      m.group(1)
      for m in re.finditer(r"^([\w./]+) = %gin\.REQUIRED$", gin.config_str(), re.MULTILINE)
  )


def call_configured(fn: Callable, *args, **kwargs):
  """Call a gin-configured function; a missing REQUIRED macro or parameter becomes a UserError."""
  missing = missing_required_macros()
  if missing:
    raise UserError(
        f"missing required gin binding {missing[0]} (set it with --gin.{missing[0]}=...)"
    )
  name = getattr(fn, "__name__", str(fn))
  try:
    return fn(*args, **kwargs)
  except RuntimeError as e:
    if "Required bindings" in str(e) or "REQUIRED" in str(e):
      raise UserError(f"missing required gin binding: {_one_line(e)}") from None
    raise
  except (TypeError, ValueError) as e:
    # Config constructors validate their fields; gin adds its own context lines.
    raise UserError(f"bad {name} config: {_one_line(e).split(' In call to')[0]}") from None


def write_operative_config(directory: str, name: str = "config.gin") -> str:
  """Save the config actually used (t5x's operative config) beside the outputs."""
  from synthjax import storage

  path = storage.join(directory, name)
  storage.write_text(path, gin.operative_config_str())
  return path


# Settings a resumed run may change: where it lives (a moved folder), how often it reports
# and saves, how many hosts run it.
RESUMABLE_SETTINGS = (
    "MODEL_DIR",
    "TrainConfig.model_dir",
    "init_distributed.",
    "TrainConfig.log_every",
    "TrainConfig.checkpoint_every",
    "TrainConfig.keep_checkpoints",
    "MixtureLoader.threads",
)


def settings(config_text: str) -> dict:
  """`name = value` bindings of an operative config or a preset (values may run over several
  lines), as written."""
  out, key = {}, None
  for line in config_text.splitlines():
    if not line.strip() or line.lstrip().startswith("#"):
      key = None
    elif line[0].isspace() and key:
      out[key] += " " + line.strip()
    elif " = " in line:
      key, value = line.split(" = ", 1)
      out[key.strip()] = value.strip()
  return out


def changed_settings(directory: str, name: str = "config.gin") -> List[str]:
  """How this process's operative config differs from the one saved in `directory` (each
  'NAME: old -> new'); settings only one of them has, or a resume may change, are not
  compared."""
  from synthjax import storage

  path = storage.join(directory, name)
  if not storage.exists(path):
    return []
  old, new = settings(storage.read_text(path)), settings(gin.operative_config_str())
  return [
      f"{k}: {old[k]} -> {new[k]}"
      for k in sorted(old.keys() & new.keys())
      if old[k] != new[k] and not k.startswith(RESUMABLE_SETTINGS)
  ]


def main(prog: str, run: Callable[[List[str]], None], argv: Optional[Sequence[str]] = None):
  """Entry point of a gin binary: parse gin flags, then `run(remaining_args)`."""
  from synthjax.errors import exit_on_user_error

  @exit_on_user_error(prog)
  def go(args):
    from synthjax import compile_cache, quiet

    quiet.import_tensorflow()
    compile_cache.enable()
    files, bindings, paths, rest = split_argv(args)
    parse(files, bindings, paths)
    check_bare_words(args)
    return run(rest)

  return go(argv)
