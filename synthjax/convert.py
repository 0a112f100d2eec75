"""Convert a Hugging Face directory or a GGUF file into a synthjax model directory.

    python -m synthjax.convert --hf_dir=PATH --out=MODEL_DIR
    python -m synthjax.convert --gguf=FILE.gguf --out=MODEL_DIR
    python -m synthjax.convert --gguf=smollm2-135m-instruct --out=MODEL_DIR  # embedded
    python -m synthjax.convert --export_hf=MODEL_DIR --out=HF_DIR

Any problem with the input (missing tensor, wrong shape, unknown architecture, truncated
file) is reported on one line, and no output directory is left behind.
"""

import argparse
import os
import sys

from synthjax.checkpoints import gguf_import, hf, store
from synthjax.errors import ArgumentParser, UserError, exit_on_user_error


def convert_hf(hf_dir: str, out: str, scan_layers: bool = False, overwrite: bool = False):
  cfg, params = hf.load(hf_dir)
  cfg = cfg.replace(scan_layers=scan_layers)
  if scan_layers:
    from synthjax.checkpoints import layout

    params = {
        **{k: v for k, v in params.items() if not k.startswith("layers_")},
        **layout.stack_layers(cfg, [params[f"layers_{i}"] for i in range(cfg.L)]),
    }
  tokenizer, meta = _hf_tokenizer(hf_dir)
  store.save_model(out, cfg, params, tokenizer, meta, overwrite=overwrite)
  return cfg


def _hf_tokenizer(hf_dir: str):
  import json
  import os

  from tokenizers import Tokenizer

  path = os.path.join(hf_dir, "tokenizer.json")
  if not os.path.exists(path):
    return None, None
  meta = {}
  cfg_path = os.path.join(hf_dir, "generation_config.json")
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      gen = json.load(f)
    eos = gen.get("eos_token_id")
    meta = {
        "bos_id": gen.get("bos_token_id", -1),
        "eos_id": eos[0] if isinstance(eos, list) else (eos if eos is not None else -1),
    }
  return Tokenizer.from_file(path), meta


def convert_gguf(path: str, out: str, overwrite: bool = False):
  from synthjax import assets

  cfg, params, tokenizer, meta = gguf_import.load(assets.resolve_gguf(path))
  store.save_model(out, cfg, params, tokenizer, meta, overwrite=overwrite)
  return cfg


def export_hf(model_dir: str, out: str, overwrite: bool = False):
  cfg = store.load_config(model_dir)
  hf.save(cfg, store.load_params(model_dir, cfg), out, overwrite=overwrite)
  return cfg


def _check_out(out: str, overwrite: bool) -> None:
  """Before any work: --out is new, or replacing it was asked for."""
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"--out={out}: is a file, not a folder")
  if os.path.exists(out) and not overwrite:
    raise UserError(f"--out={out} already exists; pass --overwrite to replace it")
  parent = os.path.dirname(os.path.abspath(out))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.access(parent, os.W_OK):
    raise UserError(f"--out={out}: {parent} is not writable")


@exit_on_user_error("synthjax.convert")
def main(argv=None):
  parser = ArgumentParser(
      prog="python -m synthjax.convert",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--hf_dir", help="HF directory: config.json + *.safetensors")
  source.add_argument(
      "--gguf",
      help="a llama.cpp GGUF file, or 'smollm2-135m-instruct' for the embedded generator",
  )
  source.add_argument("--export_hf", help="a synthjax model directory to export to HF")
  parser.add_argument("--out", required=True, help="output directory (created atomically)")
  parser.add_argument(
      "--scan_layers",
      action="store_true",
      help="store layers stacked, for training with scan_layers=True",
  )
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  _check_out(args.out, args.overwrite)
  if args.hf_dir:
    cfg = convert_hf(args.hf_dir, args.out, args.scan_layers, args.overwrite)
  elif args.gguf:
    cfg = convert_gguf(args.gguf, args.out, args.overwrite)
  else:
    cfg = export_hf(args.export_hf, args.out, args.overwrite)
  from synthjax.models.flops import param_count

  print(f"wrote {args.out}: {cfg.name}, {param_count(cfg) / 1e6:.1f}M params", file=sys.stderr)


if __name__ == "__main__":
  main()
