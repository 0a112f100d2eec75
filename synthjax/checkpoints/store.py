"""A converted model directory: orbax params + model.json + model.gin (+ tokenizer).

    MODEL/params/         orbax checkpoint of the param tree
    MODEL/model.json      ModelConfig as JSON
    MODEL/model.gin       the same config as gin bindings (include it in a run file)
    MODEL/tokenizer.json  HF tokenizers file, with tokenizer_meta.json (bos/eos, chat template)

The whole directory appears at once (written under a temporary name, then renamed).
"""

import json
import os
from typing import Optional

import jax
import orbax.checkpoint as ocp

from synthjax import storage
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig


def save_model(
    out_dir: str,
    cfg: ModelConfig,
    params: dict,
    tokenizer=None,
    tokenizer_meta: Optional[dict] = None,
    overwrite: bool = False,
) -> None:
  with storage.atomic_folder(out_dir, overwrite=overwrite) as tmp:
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(tmp, "params"), params)
    checkpointer.wait_until_finished()
    with open(os.path.join(tmp, "model.json"), "w") as f:
      f.write(cfg.to_json())
    with open(os.path.join(tmp, "model.gin"), "w") as f:
      f.write(cfg.to_gin())
    if tokenizer is not None:
      tokenizer.save(os.path.join(tmp, "tokenizer.json"))
      with open(os.path.join(tmp, "tokenizer_meta.json"), "w") as f:
        json.dump(tokenizer_meta or {}, f, indent=2)


def load_config(model_dir: str) -> ModelConfig:
  path = os.path.join(model_dir, "model.json")
  if not os.path.exists(path):
    raise UserError(
        f"{model_dir}: not a synthjax model directory (no model.json); "
        "convert it with python -m synthjax.convert"
    )
  with open(path) as f:
    return ModelConfig.from_json(f.read())


def load_params(model_dir: str, cfg: Optional[ModelConfig] = None, shardings=None):
  """Restore params, each leaf straight onto its shards when `shardings` is given."""
  cfg = cfg or load_config(model_dir)
  tree = check_params(model_dir, cfg)
  checkpointer = ocp.StandardCheckpointer()
  path = os.path.join(os.path.abspath(model_dir), "params")
  if shardings is None:
    return checkpointer.restore(path)
  target = jax.tree.map(
      lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s), tree, shardings
  )
  return checkpointer.restore(path, target)


def check_params(model_dir: str, cfg: ModelConfig):
  """The stored tensors (read from the checkpoint's metadata, no weights loaded) are the ones
  the config's model has, with its shapes: one line naming the first that is missing, extra or
  of another shape. Returns the metadata tree."""
  import flax.linen as nn

  from synthjax.models.llama import abstract_params

  path = os.path.join(os.path.abspath(model_dir), "params")
  if not os.path.isdir(path):
    what = (
        "a training run's MODEL_DIR (its weights are in checkpoints/)"
        if os.path.isdir(os.path.join(model_dir, "checkpoints"))
        else "incomplete"
    )
    raise UserError(f"{model_dir}: no params/ folder: {what}, not a synthjax model directory")
  meta = ocp.StandardCheckpointer().metadata(path)
  stored = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree

  def by_name(tree):
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }

  expected = by_name(nn.unbox(abstract_params(cfg)))
  found = by_name(stored)
  for name, shape in expected.items():
    if name not in found:
      raise UserError(
          f"{model_dir}: missing tensor {name!r} (shape {shape}) that its model.json needs"
      )
    if found[name] != shape:
      raise UserError(
          f"{model_dir}: tensor {name!r} has shape {found[name]}, its model.json needs {shape}"
      )
  extra = sorted(set(found) - set(expected))
  if extra:
    raise UserError(
        f"{model_dir}: tensor {extra[0]!r} is not part of the model its model.json describes"
    )
  return stored


def load_tokenizer(model_dir: str):
  """(tokenizers.Tokenizer, meta dict) saved beside the weights."""
  from tokenizers import Tokenizer

  path = os.path.join(model_dir, "tokenizer.json")
  if not os.path.exists(path):
    raise UserError(f"{model_dir}: no tokenizer.json")
  meta_path = os.path.join(model_dir, "tokenizer_meta.json")
  meta = {}
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      meta = json.load(f)
  return Tokenizer.from_file(path), meta
