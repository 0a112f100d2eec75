"""The cluster configs under launch/ray/ against the schema Ray's cluster launcher checks them
with (ray/autoscaler/ray-schema.json, shipped with Ray), and what the study needs of them."""

import glob
import json
import os

import pytest

ray = pytest.importorskip("ray")
jsonschema = pytest.importorskip("jsonschema")
yaml = pytest.importorskip("yaml")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "launch", "ray", "*.yaml")))


def _schema():
  with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_each_cluster_config_is_valid_for_ray_up(path):
  with open(path) as f:
    config = yaml.safe_load(f)
  jsonschema.validate(config, _schema())
  # every node installs the project through the lock, and Ray runs from that environment
  setup = " ".join(config["setup_commands"] + config.get("worker_setup_commands", []))
  assert "requirements/lock.txt" in setup
  assert all(
      c.startswith("~/venv/bin/ray")
      for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
  )


def test_a_config_that_breaks_the_schema_is_caught():
  with open(os.path.join(REPO, "launch", "ray", "tpu.yaml")) as f:
    config = yaml.safe_load(f)
  config["max_workers"] = "eight"
  with pytest.raises(jsonschema.ValidationError):
    jsonschema.validate(config, _schema())


def test_the_tpu_config_names_each_generation_with_its_runtime_version():
  with open(os.path.join(REPO, "launch", "ray", "tpu.yaml")) as f:
    types = yaml.safe_load(f)["available_node_types"]
  runtimes = {
      t["node_config"]["acceleratorType"].split("-")[0]: t["node_config"]["runtimeVersion"]
      for t in types.values()
      if "acceleratorType" in t["node_config"]
  }
  assert runtimes == {
      "v4": "tpu-ubuntu2204-base",
      "v5litepod": "v2-alpha-tpuv5-lite",
      "v5p": "v2-alpha-tpuv5",
      "v6e": "v2-alpha-tpuv6e",
  }
