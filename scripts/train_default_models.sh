#!/usr/bin/env bash
# Reproduce the embedded default models (metrabs_ros/models/*.onnx) from scratch: synthetic data, training,
# export, evaluation. Deterministic from the seeds below. Writes under generated/ (git-ignored).
#   bash scripts/train_default_models.sh            # the interim CPU recipe (what ships now; ~1.5 h on 2 cores)
#   DEVICE=cuda POSE_CONFIG=pose_default.yaml DET_STEPS=40000 bash scripts/train_default_models.sh   # GPU recipe
# One torch thread per process on a shared 2-core machine (two threads were 28x slower: OpenMP oversubscription).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY=.venv/bin/python
DEVICE="${DEVICE:-cpu}"
POSE_CONFIG="${POSE_CONFIG:-pose_interim_cpu.yaml}"
DET_STEPS="${DET_STEPS:-3000}"
G=generated
cli() { $PY -m metrabs_ros.cli "$@"; }

# 1. data (seeds: train crops 1, val crops 2, val scenes 3, train scenes 4, capsule scenes 0)
[[ -f $G/synth/crops-train/manifest.json ]] || cli synth --kind crops --count 24000 --seed 1 --split train --out $G/synth/crops-train --workers 2 --size 256
[[ -f $G/synth/crops-val/manifest.json ]] || cli synth --kind crops --count 1024 --seed 2 --split val --out $G/synth/crops-val --workers 2 --size 256
[[ -f $G/synth/scenes-val/manifest.json ]] || cli synth --kind scenes --count 400 --seed 3 --split val --out $G/synth/scenes-val --workers 2 --image-size 640x480
[[ -f $G/synth/scenes-train/manifest.json ]] || cli synth --kind scenes --count 2000 --seed 4 --split train --out $G/synth/scenes-train --workers 2 --image-size random
[[ -f $G/synth/capsule-scenes-train/detector_scenes.json ]] || cli render-detector-scenes --out $G/synth/capsule-scenes-train --first-seed 0 --count 1500

# 2. pose model
cli train --config "metrabs_ros/training/configs/$POSE_CONFIG" --data $G/synth/crops-train --val $G/synth/crops-val \
    --out $G/runs/pose --device "$DEVICE" --resume
cli export $G/runs/pose/final.pt --out $G/runs/pose/metrabs_default.onnx

# 3. person detector (Anny scenes + capsule scenes, so that the numpy demo camera's people are found too)
cli train-detector --data $G/synth/scenes-train,$G/synth/capsule-scenes-train --val $G/synth/scenes-val \
    --out $G/runs/detector --config default.yaml --device "$DEVICE" --set optim.steps=$DET_STEPS \
    --set optim.batch_size=16 --set optim.lr=0.003 --set optim.warmup_steps=150 --set data.torch_threads=1 \
    --set data.workers=1 --set validation.every_steps=1000 --set validation.max_images=200 \
    --set checkpoint_every_steps=250

# 4. evaluation on the held-out scenes (different seeds, bodies, motions, backgrounds)
cli evaluate $G/runs/pose/metrabs_default.onnx --data $G/synth/scenes-val --gt-boxes --out $G/runs/eval_pose_gt_boxes
cli evaluate $G/runs/pose/metrabs_default.onnx --data $G/synth/scenes-val --detector $G/runs/detector/person_detector.onnx \
    --out $G/runs/eval_end_to_end
echo "copy $G/runs/pose/metrabs_default.onnx and $G/runs/detector/person_detector.onnx (as detector_default.onnx) to metrabs_ros/models/"
