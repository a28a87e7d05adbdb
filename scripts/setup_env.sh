#!/usr/bin/env bash
# Create/refresh the project's virtual environment (.venv) with everything the
# services and tests need. Idempotent: re-installs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.transtic-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch/torchvision are pinned in pyproject.toml; pip takes them from the local wheel cache
  .venv/bin/python -m pip install --quiet -e ".[services,dev]"
  echo "$want" > "$stamp"
fi
