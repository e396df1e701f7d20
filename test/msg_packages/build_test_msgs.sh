#!/usr/bin/env bash
# Build the TEST-ONLY message packages tf2_msgs and hri_msgs (stand-ins written from their published .msg
# definitions: the PyPI ROS wheels have neither) into a prefix of their own, never the venv and never installed
# with metrabs_ros. The ROS tests put that prefix on PYTHONPATH / AMENT_PREFIX_PATH of the processes they start.
#
#   test/msg_packages/build_test_msgs.sh [PREFIX]     # default: <repo>/build/test_msgs/install
#
# Environment: PYTHON (default <repo>/.venv/bin/python). Idempotent: exits at once when nothing changed.
# Prints the prefix's Python directory on its last line.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
PREFIX="${1:-$ROOT/build/test_msgs/install}"
BUILD="$(dirname "$PREFIX")/build"
mkdir -p "$PREFIX" "$BUILD"
PREFIX="$(cd "$PREFIX" && pwd)"
PY_PREFIX="$("$PYTHON" -c 'import sys; print(sys.prefix)')"
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:-$PY_PREFIX}"    # the wheels' ament index (rosidl typesupports)
PY_DIR="$("$PYTHON" -c 'import sys, sysconfig, os; print(os.path.relpath(sysconfig.get_path("purelib", vars={"base": sys.argv[1]}), sys.argv[1]))' "$PREFIX")"
STAMP="$BUILD/.inputs.sha256"
NEW="$( (echo "$PREFIX $PYTHON"; cd "$HERE" && find tf2_msgs hri_msgs -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$NEW" && -d "$PREFIX/$PY_DIR/hri_msgs" && -d "$PREFIX/$PY_DIR/tf2_msgs" ]]; then
  echo "build_test_msgs.sh: up to date in $PREFIX"
  echo "$PREFIX/$PY_DIR"
  exit 0
fi
rm -f "$STAMP"
for package in tf2_msgs hri_msgs; do
  cmake -S "$HERE/$package" -B "$BUILD/$package" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DCMAKE_PREFIX_PATH="$PY_PREFIX" -DPython3_EXECUTABLE="$PYTHON" -DPython3_FIND_VIRTUALENV=FIRST \
    -DBUILD_TESTING=OFF -DCMAKE_INSTALL_RPATH="\$ORIGIN;$PREFIX/lib" \
    -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/ros_wheels_fix.cmake" > "$BUILD/$package.configure.log" 2>&1 \
    || { tail -30 "$BUILD/$package.configure.log" >&2; exit 1; }
  cmake --build "$BUILD/$package" -j 2 > "$BUILD/$package.build.log" 2>&1 \
    || { tail -40 "$BUILD/$package.build.log" >&2; exit 1; }
  cmake --install "$BUILD/$package" > "$BUILD/$package.install.log" 2>&1 \
    || { tail -30 "$BUILD/$package.install.log" >&2; exit 1; }
done
echo "$NEW" > "$STAMP"
echo "build_test_msgs.sh: built tf2_msgs + hri_msgs (test-only) into $PREFIX"
echo "$PREFIX/$PY_DIR"
