"""The generate binary (python -m synthjax.generate; a package main, since synthjax/generate/
is the package): rephrase or expand a corpus into synthetic shards.

    python -m synthjax.generate --gin_file=generate/base.gin --gin.INPUT='corpus/*.jsonl' \
        --gin.STYLE=hq --gin.OUTPUT_DIR=synthetic/hq

Rerunning the same command resumes: finished shards are kept, the rest are generated.
"""

import json

from synthjax import gin_cli
from synthjax.errors import UserError
from synthjax.generate.job import GenerateConfig, run


def _run(rest):
  if rest:
    raise UserError(f"unknown arguments: {' '.join(rest)}")
  manifest = run(gin_cli.call_configured(GenerateConfig))
  print(json.dumps({k: manifest.get(k) for k in ("chunks", "kept", "rejected", "complete")}))


def main(argv=None):
  gin_cli.main("synthjax.generate", _run, argv)


if __name__ == "__main__":
  main()
