#!/usr/bin/env bash
# The project's test command (CI runs exactly this): set up, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/mypy transtic services
.venv/bin/python scripts/gen_protos.py --check
.venv/bin/python -m pytest -q "$@"
