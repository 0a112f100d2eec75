#!/usr/bin/env bash
# Make requirements/lock.txt anew from pyproject.toml's ranges: one exact set for Python 3.11
# to 3.13 (uv's universal resolution: where a release needs a newer Python, lines carry a
# marker), with the test, lint, cluster, gpu and tpu extras. README's commands and .ci/run install
# through it (pip install -c requirements/lock.txt ...).
#   pip install uv && bash requirements/relock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
uv pip compile pyproject.toml --universal --python-version 3.11 \
  --extra test --extra lint --extra cluster --extra gpu --extra tpu \
  --constraint requirements/pins.txt \
  --no-header --no-annotate -o requirements/lock.txt
