#!/usr/bin/env bash
# Reproduce the weights shipped in transtic/weights/data/ and docs/eval/.
#
# CPU only, one thread per job, niced. Each stage resumes from its last
# checkpoint when re-run (--resume), so an interrupted run just continues.
# Stages 2 and 3 can run side by side. Run from the repository root:
#
#     scripts/train_default_weights.sh [stage...]     # stages: q3 q1 cls3 cls1 export eval
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-var/train}
DATA=transtic/weights/data
export OMP_NUM_THREADS=1
train() { nice -n 19 "$PY" -m transtic.training "$@" --threads 1 --no-progress --resume; }
stages=("${@:-q3 q1 cls3 cls1 export eval}")

for stage in ${stages[*]}; do
  case "$stage" in
  q3) # 1. base codec at the paper's quality 3 (lambda 0.0067), from scratch
    train codec --model tic-small --quality 3 --out "$RUNS/codec_q3" --steps 1000 \
      --batch-size 2 --repeats 8 --scale-jitter 0.5 1.0 --lr 4e-4 --lr-milestones 0.6 0.85 \
      --log-every 25 --checkpoint-every 50 --seed 42 ;;
  q1) # 2. quality 1 (lambda 0.0018), fine-tuned from the quality-3 codec
    train codec --model tic-small --quality 1 --init "$RUNS/codec_q3/final.pth.tar" \
      --out "$RUNS/codec_q1" --steps 400 --batch-size 2 --repeats 8 --scale-jitter 0.5 1.0 \
      --lr 2e-4 --lr-milestones 0.7 --log-every 25 --checkpoint-every 50 --seed 43 ;;
  cls3) # 3. classification prompts against EfficientNet-Lite0, base codec frozen
    train prompts --task classification --quality 3 --base "$RUNS/codec_q3/final.pth.tar" \
      --out "$RUNS/cls_q3" --steps 200 --batch-size 2 --repeats 8 --scale-jitter 0.5 1.0 \
      --lr 1e-3 --lr-milestones 0.7 --log-every 10 --checkpoint-every 20 --seed 44 ;;
  cls1) # 4. quality-1 prompts, starting from the quality-3 prompts
    train prompts --task classification --quality 1 --base "$RUNS/codec_q1/final.pth.tar" \
      --init-prompts "$RUNS/cls_q3/final.pth.tar" --out "$RUNS/cls_q1" --steps 120 \
      --batch-size 2 --repeats 8 --scale-jitter 0.5 1.0 --lr 1e-3 --lr-milestones 0.7 \
      --log-every 10 --checkpoint-every 20 --seed 45 ;;
  export)
    for q in 1 3; do
      "$PY" -m transtic.training export "$RUNS/codec_q$q" --out "$DATA/tic_small_base_q$q.pth.tar"
      "$PY" -m transtic.training export "$RUNS/cls_q$q" --out "$DATA/transtic_small_cls_q$q.pth.tar"
    done
    sha256sum "$DATA"/*.pth.tar ;;
  eval) # 5. held-out photos: codec with and without prompts, JPEG and WebP anchors
    nice -n 19 "$PY" -m transtic.evaluation --task classification --heldout-photos \
      --codec "transtic=$DATA/transtic_small_cls_q1.pth.tar,$DATA/transtic_small_cls_q3.pth.tar" \
      --codec "tic=$DATA/tic_small_base_q1.pth.tar,$DATA/tic_small_base_q3.pth.tar" \
      --anchor-qualities 5 10 20 30 50 75 90 --threads 1 --no-progress --out docs/eval ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
