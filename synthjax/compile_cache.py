"""JAX's persistent compilation cache, on for synthjax's binaries and tests.

XLA compiles each program once per process: a generation job compiles its decode step for
every cache length and its prefill for every prompt bucket (3-5 s each on a 2-core CPU), and
the micro study's second generation kind, the next job and every test process compiled the
same programs again. With the cache, a program compiled once on this machine is read back
instead (measured: a decode step's compile went from 3-4 s to 0.3 s).

The directory is, in order: JAX's own setting (JAX_COMPILATION_CACHE_DIR), SYNTHJAX_COMPILE_CACHE
("off" turns the cache off), or ~/.cache/synthjax/jax-compile. Entries are keyed by the program,
the compile options, the devices and the jax/XLA versions, so a stale one is never used. A
size limit turns on JAX's least-recently-used eviction, which takes a file lock around every
read and write, so the processes of a local multi-process job can share the folder.
"""

import os
from typing import Optional

import jax

DEFAULT_DIR = os.path.join("~", ".cache", "synthjax", "jax-compile")
MAX_BYTES = 4 << 30


def enable() -> Optional[str]:
  """Turn the cache on, before anything compiles; returns its folder (None when off)."""
  # a flag jax defines at run time: its Config class does not declare it
  configured = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
  if configured:
    return configured
  directory = os.environ.get("SYNTHJAX_COMPILE_CACHE", "") or os.path.expanduser(DEFAULT_DIR)
  if directory == "off":
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return directory
