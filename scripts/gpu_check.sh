#!/usr/bin/env bash
# The GPU path, proven in one run (< 8 minutes on a lent GPU machine):
#   1. the gpu-marked tests (CPU <-> GPU identical entropy parameters and latents),
#   2. codec speed on CUDA in ms/MP: float32, bfloat16, float16 and torch.compile,
#   3. the analytics service on CUDA: dynamic batching against one frame at a time,
#      under the same load (scripts/bench_services.py).
# Writes one JSON (default gpu_check/gpu_check.json) and prints a summary.
#
#   bash scripts/gpu_check.sh [--out DIR]
#   bash scripts/gpu_check.sh --cpu-smoke [--out DIR]   # CPU-only parts, tiny model (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
OUT=gpu_check
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) MODE=cpu-smoke ;;
    --out) OUT="$2"; shift ;;
    *) echo "usage: $0 [--cpu-smoke] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python}"
mkdir -p "$OUT"
status=0

step() {  # name, then the command; a failing step is recorded and the others still run
  local name="$1"; shift
  echo "== $name"
  local start=$SECONDS
  if "$@"; then echo "ok" > "$OUT/$name.status"; else echo "failed" > "$OUT/$name.status"; status=1; fi
  echo "$((SECONDS - start))" > "$OUT/$name.seconds"
}

if [ "$MODE" = gpu ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" || true
  step gpu_tests "$PY" -m pytest -q -m gpu tests --junitxml "$OUT/gpu_tests.xml"
  step codec_speed timeout 240 "$PY" scripts/device_speed.py --device cuda --compile \
    --repeats 5 --json "$OUT/codec_speed.json"
  step services timeout 240 "$PY" scripts/bench_services.py --quick --device cuda --threads 2 \
    --json "$OUT/services.json"
else
  # The GPU tests skip here but must still be collected (imports, markers).
  step gpu_tests "$PY" -m pytest -q -m gpu tests/test_codec_gpu.py tests/entropy/test_fixed_point.py \
    --junitxml "$OUT/gpu_tests.xml" -p no:cacheprovider
  step codec_speed "$PY" scripts/device_speed.py --device cpu --tiny --size 256x256 --repeats 1 \
    --json "$OUT/codec_speed.json"
fi

"$PY" - "$OUT" "$MODE" <<'PY'
import json, sys
from pathlib import Path

out, mode = Path(sys.argv[1]), sys.argv[2]
report = {"mode": mode, "steps": {}}
for status in sorted(out.glob("*.status")):
    name = status.stem
    report["steps"][name] = {
        "status": status.read_text().strip(),
        "seconds": int((out / f"{name}.seconds").read_text()),
    }
    data = out / f"{name}.json"
    if data.is_file():
        report[name] = json.loads(data.read_text())
if (out / "gpu.txt").is_file():
    report["gpu"] = (out / "gpu.txt").read_text().strip()
(out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
print(f"summary ({mode}), {out / 'gpu_check.json'}:")
for name, step in report["steps"].items():
    print(f"  {name:<12} {step['status']:<7} {step['seconds']:>4d} s")
for row in report.get("codec_speed", {}).get("rows", []):
    print(f"  {row['path']:<36} {row['encode_ms_per_mp']:>9.1f} / {row['decode_ms_per_mp']:.1f} ms/MP enc/dec")
batching = report.get("services", {}).get("batching")
if batching:
    print(f"  analytics batching: {batching['batched']['fps']:.2f} vs "
          f"{batching['single']['fps']:.2f} frames/s one at a time ({batching['ratio']:.2f}x)")
PY
exit $status
