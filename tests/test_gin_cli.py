import os

import gin
import pytest

from synthjax import gin_cli
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig


@gin.configurable
def _job(model_dir=gin.REQUIRED, steps=10):
  return model_dir, steps


def test_split_argv_understands_t5x_flags():
  files, bindings, paths, rest = gin_cli.split_argv(
      [
          "--gin_file=a.gin",
          "--gin_file",
          "b.gin",
          "--gin.MODEL_DIR=/tmp/x y",
          "--gin.STEPS=5",
          "--gin_search_paths=p1,p2",
          "--other=1",
      ]
  )
  assert files == ["a.gin", "b.gin"]
  assert bindings == ["MODEL_DIR = '/tmp/x y'", "STEPS = 5"]
  assert paths == ["p1", "p2"] and rest == ["--other=1"]


def test_model_preset_parses_and_macros_bind(tmp_path):
  run = tmp_path / "run.gin"
  run.write_text(
      "include 'models/tiny.gin'\nMODEL_DIR = %gin.REQUIRED\n_job.model_dir = %MODEL_DIR\n"
  )
  gin_cli.parse([str(run)], ["MODEL_DIR = '/out'", "_job.steps = 3"])
  assert ModelConfig().name == "tiny" and ModelConfig().D == 64
  assert gin_cli.call_configured(_job) == ("/out", 3)
  path = gin_cli.write_operative_config(str(tmp_path))
  assert "_job.steps = 3" in open(path).read()


def test_presets_parse_from_a_folder_whose_subfolders_share_their_names(tmp_path, monkeypatch):
  # gin 0.5 reads an include's folder as a Python package when the working directory (on
  # sys.path under `python -m`) holds a folder of that name; the presets' './' includes and the
  # one-line error for a plain one keep that from reaching a user as a TypeError.
  for name in ("models", "train", "study"):
    (tmp_path / name).mkdir()
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  gin_cli.parse(["train/tiny_markov.gin"], ["MODEL_DIR = '/out'"])
  assert ModelConfig().name == "tiny"
  run = tmp_path / "run.gin"
  run.write_text("include 'models/tiny.gin'\n")
  with pytest.raises(UserError, match="write the include as './folder/file.gin'"):
    gin_cli.parse([str(run)])
  run.write_text("include './models/tiny.gin'\n")
  gin_cli.parse([str(run)])
  assert ModelConfig().name == "tiny"


def test_unknown_binding_is_one_clear_line():
  with pytest.raises(UserError, match="bad gin config: .*No configurable matching 'nope'"):
    gin_cli.parse([], ["nope.x = 1"])
  with pytest.raises(UserError, match="gin file 'missing.gin' not found"):
    gin_cli.parse(["missing.gin"])


def test_missing_required_macro_is_one_clear_line(tmp_path):
  run = tmp_path / "run.gin"
  run.write_text("MODEL_DIR = %gin.REQUIRED\n_job.model_dir = %MODEL_DIR\n")
  gin_cli.parse([str(run)])
  with pytest.raises(UserError, match="missing required gin binding"):
    gin_cli.call_configured(_job)


def test_every_model_preset_builds_a_valid_config():
  from synthjax.models.flops import param_count

  folder = os.path.join(gin_cli.GIN_CONFIGS, "models")
  sizes = {}
  for name in sorted(os.listdir(folder)):
    gin_cli.parse([os.path.join(folder, name)])
    cfg = ModelConfig()
    assert cfg.name == name[:-4]
    sizes[cfg.name] = param_count(cfg)
  assert 100e6 < sizes["paper_100m"] < 150e6
  assert 0.9e9 < sizes["paper_1b"] < 1.5e9
  assert 2.5e9 < sizes["paper_3b"] < 3.5e9
  assert sizes["smollm2_135m"] == 134_515_008  # SmolLM2-135M's published parameter count
  assert sizes["llama3_3b"] == 3_212_749_824  # Llama-3.2-3B's count (tied embeddings)
  assert 7.9e9 < sizes["llama3_8b"] < 8.1e9
  assert 70e9 < sizes["llama3_70b"] < 71e9


@pytest.mark.parametrize(
    "word,value", [("false", False), ("FALSE", False), ("True", True), ("none", None)]
)
def test_booleans_and_none_on_the_command_line(word, value):
  import synthjax.data.loader  # noqa: F401  (registers MixtureLoader)

  _, bindings, _, _ = gin_cli.split_argv([f"--gin.MixtureLoader.allow_repeat={word}"])
  gin_cli.parse([], bindings)
  import gin as gin_lib

  assert gin_lib.query_parameter("MixtureLoader.allow_repeat") is value


def test_a_bare_word_for_a_number_or_boolean_names_the_flag():
  import synthjax.data.loader  # noqa: F401
  from synthjax.training.config import TrainConfig  # noqa: F401

  argv = ["--gin.MixtureLoader.allow_repeat=yes"]
  gin_cli.parse([], gin_cli.split_argv(argv)[1])
  with pytest.raises(UserError, match=r"--gin.MixtureLoader.allow_repeat=yes: .* takes a bool"):
    gin_cli.check_bare_words(argv)
  argv = ["--gin.TrainConfig.seq_len=long"]
  gin_cli.parse([], gin_cli.split_argv(argv)[1])
  with pytest.raises(UserError, match="TrainConfig.seq_len takes an int, not the word 'long'"):
    gin_cli.check_bare_words(argv)
  gin_cli.check_bare_words(["--gin.MODEL_DIR=/tmp/x", "--gin.MixtureLoader.mixture=natural"])
