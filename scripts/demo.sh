#!/usr/bin/env bash
# The main job: demo camera (synthetic people) + pose node as ROS 2 processes; prints what /poses3d carries and
# writes generated/demo/annotated.mp4 and generated/demo/summary.json. Arguments go to metrabs_ros.ros.demo_main.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ -x .venv/bin/python ]] || { echo "demo.sh: run scripts/setup.sh first" >&2; exit 1; }
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds_large_shm.xml}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m metrabs_ros.ros.demo_main "$@"
