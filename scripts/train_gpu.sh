#!/usr/bin/env bash
# The default-weights recipe (scripts/train_default_weights.sh) at the paper's size,
# for a lent GPU machine: TIC N=128/M=192 (`tic`), 256 crops, the paper's batch sizes.
# Bounded by wall time so that it fits a short GPU lease; every stage resumes.
#
#     bash scripts/train_gpu.sh [MINUTES_PER_STAGE]      # default 2
#
# Writes var/train-gpu/{codec_qN,cls_qN}/ and a summary JSON at var/train-gpu/summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-var/train-gpu}
CORPUS=${CORPUS:-var/corpus}
MINUTES=${1:-2}
[ -d "$CORPUS/train" ] || "$PY" scripts/build_corpus.py --out "$CORPUS"
DATA_ARGS=(--data folder --data-path "$CORPUS/train" --max-short-side 512 --cache-images
  --num-workers 4 --device cuda --no-progress --resume)
mkdir -p "$RUNS"
for q in 1 2 3; do
  timeout "$((MINUTES * 60))" "$PY" -m transtic.training codec --model tic --quality "$q" \
    "${DATA_ARGS[@]}" --out "$RUNS/codec_q$q" --steps 20000 --batch-size 12 --patch-size 256 \
    --scale-jitter 0.5 1.0 --lr 1e-4 --lr-milestones 0.8 --checkpoint-every 200 --log-every 50 \
    || true
  "$PY" -m transtic.training export "$RUNS/codec_q$q" --out "$RUNS/codec_q$q/final.pth.tar"
  timeout "$((MINUTES * 60))" "$PY" -m transtic.training prompts --task classification \
    --quality "$q" --base "$RUNS/codec_q$q/final.pth.tar" "${DATA_ARGS[@]}" \
    --out "$RUNS/cls_q$q" --steps 5000 --batch-size 16 --patch-size 256 \
    --scale-jitter 0.5 0.625 --lr 1e-3 --lr-milestones 0.7 --checkpoint-every 100 \
    --log-every 20 || true
  "$PY" -m transtic.training export "$RUNS/cls_q$q" --out "$RUNS/cls_q$q/final.pth.tar"
done
"$PY" - "$RUNS" <<'EOF'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
summary = {}
for log in sorted(runs.glob("*/metrics.jsonl")):
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    summary[log.parent.name] = rows[-1] if rows else {}
(runs / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
