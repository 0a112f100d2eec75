"""The persistent compilation cache: a second process reads back what the first compiled."""

import json
import os
import subprocess
import sys

# Compiles a small program with the cache as the binaries enable it, and reports the folder
# and how many compiles JAX read back from it.
_PROGRAM = """
import json, jax, jax.numpy as jnp
from synthjax import compile_cache
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None)
folder = compile_cache.enable()
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()
print(json.dumps({"folder": folder, "hits": len(hits)}))
"""


def _run(settings):
  env = {
      k: v
      for k, v in os.environ.items()
      if k not in ("JAX_COMPILATION_CACHE_DIR", "SYNTHJAX_COMPILE_CACHE")
  }
  # every compile is cached, however quick (the default keeps only those over 1 s)
  env.update(settings, JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  proc = subprocess.run(
      [sys.executable, "-c", _PROGRAM], capture_output=True, text=True, env=env, check=True
  )
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_back_the_first_ones_compile(tmp_path):
  folder = str(tmp_path / "cache")
  first = _run({"SYNTHJAX_COMPILE_CACHE": folder})
  assert first == {"folder": folder, "hits": 0}
  programs = [f for f in os.listdir(folder) if f.endswith("-cache")]
  assert any(f.startswith("jit__lambda-") for f in programs)
  second = _run({"SYNTHJAX_COMPILE_CACHE": folder})
  assert second == {"folder": folder, "hits": len(programs)}  # every program read back


def test_off_turns_it_off_and_jax_own_setting_wins(tmp_path):
  off = _run({"SYNTHJAX_COMPILE_CACHE": "off"})
  assert off == {"folder": None, "hits": 0}
  theirs = str(tmp_path / "theirs")
  chosen = _run(
      {"SYNTHJAX_COMPILE_CACHE": str(tmp_path / "ours"), "JAX_COMPILATION_CACHE_DIR": theirs}
  )
  assert chosen["folder"] == theirs
  assert not os.path.exists(tmp_path / "ours")
