#!/usr/bin/env bash
# Set up everything metrabs_ros needs on a fresh Debian 12 (or similar) machine, without a ROS installation:
#   - Debian packages: python3-venv, python3-dev, cmake, g++, make (only if missing; uses sudo when not root)
#   - a virtual environment .venv with the library's requirements, the test/export/training tools (onnx, pytest,
#     torch==2.13.0 CPU, the synthetic-data engine's anny/numba/pybullet/scikit-image) and the pinned ROS 2 Kilted
#     wheels (rclpy, message packages, rosidl generators)
#   - the ROS package built with CMake and installed into .venv (messages, pose_node, demo_camera, launch files)
# Idempotent: a second run only checks. Usage: scripts/setup.sh [--quiet]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUIET=0
[[ "${1:-}" == "--quiet" ]] && QUIET=1
log() { [[ $QUIET -eq 1 ]] || echo "setup: $*"; }
PY="${PYTHON:-python3}"

need_apt=()
"$PY" -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
"$PY" -c 'import sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' \
  || need_apt+=(python3-dev)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
if [[ ${#need_apt[@]} -gt 0 ]]; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  log "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

STAMP=.venv/.metrabs_ros_requirements
WANT="$(cat setup.py requirements.txt requirements-dev.txt requirements-train.txt requirements-ros.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -x .venv/bin/python || ! -f $STAMP || "$(cat $STAMP)" != "$WANT" ]]; then
  log "creating .venv and installing Python packages (first time: ~1-2 min)"
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  # torch is needed only to export/train models and by the test fixtures; 2.13.0 is the CPU build here.
  .venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -r requirements-dev.txt -r requirements-train.txt -r requirements-ros.txt 2>&1 \
    | grep -v '^WARNING: Location' || true
  # The `metrabs-ros` command (console script); the ROS build below installs the package files themselves.
  .venv/bin/python -m pip install -q --no-deps -e . 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import numpy, onnxruntime, onnx, torch, cv2, rclpy, anny, numba, pybullet_data' \
    || { echo "setup: Python packages are missing after pip install" >&2; exit 1; }
  [[ -x .venv/bin/metrabs-ros ]] || { echo "setup: pip install -e . did not install metrabs-ros" >&2; exit 1; }
  echo "$WANT" > $STAMP
else
  log ".venv is up to date"
fi
log "building the ROS package (messages, executables) into .venv"
bash scripts/build_ros.sh
.venv/bin/python -c 'import metrabs_ros.msg' || { echo "setup: metrabs_ros.msg does not import" >&2; exit 1; }
log "done"
