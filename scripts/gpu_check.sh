#!/usr/bin/env bash
# One-call GPU check for the lent GPU machine (H100/H200, CUDA 13, PyTorch CUDA, CuPy, cuda-bindings, numpy,
# onnxruntime CPU; no TensorRT, no onnxruntime-gpu). Run from the repository root:
#     OUT=/some/folder bash scripts/gpu_check.sh            # $OUT is set by the device tool
# Writes under $OUT: env.txt, tests.txt, agreement.json/.txt, bench_*.json/.txt, summary.txt.
#     bash scripts/gpu_check.sh tests agreement            # only these steps
# Each step runs even if an earlier one fails; the exit status is that of the first failing step. All steps
# together are kept under GPU_CHECK_SECONDS (default 560 s, inside the device tool's 600 s per call): a step is
# cut at the remaining time, later steps are skipped and say so in summary.txt.
set -u
DEADLINE=${GPU_CHECK_SECONDS:-560}
WANTED=" $* "
OUT=${OUT:-generated/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME TIMEOUT_S CMD...
  local name=$1 limit=$2; shift 2
  if [ "$WANTED" != "  " ] && [[ "$WANTED" != *" $name "* ]]; then return 0; fi
  local remaining=$((DEADLINE - SECONDS - 5))
  if [ $remaining -lt 20 ]; then echo "=== $name: skipped (time budget used)" | tee -a "$OUT/summary.txt"; return 0; fi
  [ $limit -gt $remaining ] && limit=$remaining
  echo "=== $name (limit ${limit} s): $*" | tee -a "$OUT/summary.txt"
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "    rc=$rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.txt" >> "$OUT/summary.txt"
  [ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc
  return 0
}

step env 60 bash -c "nvidia-smi; $PY -c 'import sys, torch, numpy, onnxruntime; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"\"); print(\"numpy\", numpy.__version__, \
\"onnxruntime\", onnxruntime.__version__, onnxruntime.get_available_providers())'; \
$PY -c 'import cuda.bindings; print(\"cuda.bindings\", cuda.bindings.__version__)'; \
$PY -c 'import onnx; print(\"onnx\", onnx.__version__)'; $PY -c 'import yaml, cv2; print(\"yaml/cv2 ok\")'"

# GPU tests (CUDA torch backend, cuda-python wrappers) plus the pure-logic and CPU tests of the GPU path.
step tests 400 $PY -m pytest -q -p no:cacheprovider test/test_gpu_plan.py test/test_gpu_torch_backend.py \
  test/test_gpu_cuda_memory.py test/test_gpu_trt.py test/test_gpu_benchmark.py -rs

# torch-CUDA vs ONNX Runtime (CPU) on the same inputs: <= 1 mm FP32, <= 5 mm FP16.
step agreement 600 $PY -m metrabs_ros.cli gpu-agreement --backends torch-cuda --models fixture effv2s-256 \
  --precision fp32 fp16 --case 3,5,640x480 1,1,1920x1080 --work-dir "$OUT/models" --json "$OUT/agreement.json"

# Benchmark: pose stage end to end (boxes given), all sizes / people / num_aug, EfficientNetV2-S 256 and L 384.
step bench_effv2s 600 $PY -m metrabs_ros.cli benchmark-gpu --backends torch-cuda --models effv2s-256 \
  --precision fp16 fp32 --people 1 3 8 --image-size 640x480 1920x1080 --num-aug 1 5 --frames 200 --warmup 5 \
  --max-seconds 4 --work-dir "$OUT/models" --json "$OUT/bench_effv2s.json"
step bench_effv2l_fixture 600 $PY -m metrabs_ros.cli benchmark-gpu --backends torch-cuda --models effv2l-384 fixture \
  --precision fp16 --people 1 3 8 --image-size 640x480 1920x1080 --num-aug 1 5 --frames 60 --warmup 4 \
  --max-seconds 3 --work-dir "$OUT/models" --json "$OUT/bench_effv2l_fixture.json"
# With the fixture colour-key detector (ONNX Runtime CPU) in the loop: detect_poses, 640x480.
step bench_detect 300 $PY -m metrabs_ros.cli benchmark-gpu --backends torch-cuda --models effv2s-256 \
  --precision fp16 --people 1 3 8 --image-size 640x480 --num-aug 1 5 --frames 100 --max-seconds 5 \
  --detector fixture --work-dir "$OUT/models" --json "$OUT/bench_detect.json"
# ONNX Runtime CPU reference on the same machine (16 cores), small budget.
step bench_ort_cpu 300 $PY -m metrabs_ros.cli benchmark-gpu --backends onnxruntime --models effv2s-256 \
  --people 1 3 --image-size 640x480 --num-aug 1 --frames 20 --max-seconds 10 --work-dir "$OUT/models" \
  --json "$OUT/bench_ort_cpu.json"

rm -rf "$OUT/models"   # exported ONNX files are large (EfficientNetV2-L ~ 0.5 GB); not worth carrying back
echo "overall status $status" | tee -a "$OUT/summary.txt"
exit $status
