#!/usr/bin/env bash
# Does the project still work with the newest releases its ranges allow? Installs
# ".[services,dev]" from pyproject's ranges (not from the lock) into a scratch venv, lists
# what differs from requirements/dev.lock, and runs the generated-code check and the quick
# tests (not slow, not integration) there. Not part of CI, which stays on the lock: run it
# before moving the lock (python scripts/lock.py --upgrade), to see an upstream release
# that breaks the project first.
#
#     bash scripts/check_newest.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=$(mktemp -d "${TMPDIR:-/tmp}/transtic-newest.XXXXXX")
trap 'rm -rf "$venv"' EXIT
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[services,dev]"
echo "== newest allowed releases that the lock does not pin"
"$venv/bin/python" - <<'EOF'
import sys
from importlib.metadata import version

sys.path.insert(0, "scripts")
from lock import read_lock  # noqa: E402
from pathlib import Path

moved = 0
for name, pin in sorted(read_lock(Path("requirements/dev.lock")).items()):
    try:
        newest = version(name)
    except Exception:
        continue
    if newest.split("+")[0] != str(pin.version):
        moved += 1
        print(f"  {name}: lock {pin.version} -> newest {newest}")
print(f"  ({moved} packages differ)")
EOF
status=0
echo "== generated-code check with the newest grpcio-tools"
"$venv/bin/python" scripts/gen_protos.py --check || status=1
echo "== quick tests"
# the environment test checks the lock's versions, which this venv leaves on purpose
"$venv/bin/python" -m pytest -q -m "not slow and not integration" -p no:cacheprovider \
  --deselect tests/test_lock.py::test_this_environment_is_the_dev_lock "$@" || status=1
exit $status
