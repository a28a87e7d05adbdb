#!/usr/bin/env bash
# The main job: set up, then run both services with the default models and stream
# sample frames end to end (see scripts/demo.py; pass --exit to stop afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python scripts/demo.py "$@"
