#!/usr/bin/env bash
# Build and install the metrabs_ros ROS 2 package (messages, executables, launch/config/rviz, Python library)
# with plain CMake, without /opt/ros and without sourcing anything: against the ROS 2 PyPI wheels of a venv.
#
#   scripts/build_ros.sh                 # build into build/ros, install into the venv (.venv or $VIRTUAL_ENV)
#   scripts/build_ros.sh --prefix DIR    # install into DIR instead (then source nothing: see docs/ros.md)
#   scripts/build_ros.sh --force         # rebuild even if no input changed
#   scripts/build_ros.sh --clean         # delete the build directory first
#
# Environment: PYTHON (interpreter, default <repo>/.venv/bin/python), METRABS_ROS_BUILD_DIR (default
# <repo>/build/ros), AMENT_PREFIX_PATH (default: the interpreter's sys.prefix, i.e. the venv with the wheels;
# on a normal ROS install, source /opt/ros/<distro>/setup.bash first and the script uses that).
#
# Idempotent: when no input file changed since the last successful run into the same prefix, it exits at once;
# otherwise it runs an incremental CMake build + install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"
  elif [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"
  else PYTHON="$(command -v python3)"; fi
fi
BUILD_DIR="${METRABS_ROS_BUILD_DIR:-$ROOT/build/ros}"
PREFIX=""
FORCE=0
CLEAN=0
JOBS="$(nproc 2>/dev/null || echo 2)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --clean) CLEAN=1; shift ;;
    -j) JOBS="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build_ros.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

# The venv's python re-executes itself once with LD_LIBRARY_PATH (ros_wheels_bootstrapper); ask it for facts.
PY_PREFIX="$("$PYTHON" -c 'import sys; print(sys.prefix)')"
PREFIX="${PREFIX:-$PY_PREFIX}"
mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:-$PY_PREFIX}"
CMAKE_PREFIXES="${AMENT_PREFIX_PATH//:/;}"

if [[ $CLEAN -eq 1 ]]; then rm -rf "$BUILD_DIR"; fi
mkdir -p "$BUILD_DIR"

# Fingerprint of every input: file list + contents, plus prefix and interpreter.
STAMP_FILE="$BUILD_DIR/.metrabs_ros_inputs.sha256"
fingerprint() {
  (
    cd "$ROOT"
    echo "prefix=$PREFIX python=$PYTHON ament=$AMENT_PREFIX_PATH"
    find CMakeLists.txt package.xml cmake msg launch config rviz metrabs_ros -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null | sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -d' ' -f1
}
PY_INSTALL_DIR="$("$PYTHON" -c 'import sys, sysconfig, os; print(os.path.relpath(sysconfig.get_path("purelib", vars={"base": sys.argv[1]}), sys.argv[1]))' "$PREFIX")"
INSTALLED_MARKER="$PREFIX/$PY_INSTALL_DIR/metrabs_ros/msg/_poses3_d.py"
NEW_STAMP="$(fingerprint)"
if [[ $FORCE -eq 0 && -f "$STAMP_FILE" && -f "$INSTALLED_MARKER" && -x "$PREFIX/lib/metrabs_ros/pose_node" \
      && "$(cat "$STAMP_FILE")" == "$NEW_STAMP" ]]; then
  echo "build_ros.sh: metrabs_ros is up to date in $PREFIX (inputs unchanged; --force rebuilds)"
  exit 0
fi

START_NS=$(date +%s%N)
rm -f "$STAMP_FILE"
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DCMAKE_PREFIX_PATH="$CMAKE_PREFIXES" \
    -DPython3_EXECUTABLE="$PYTHON" \
    -DPython3_FIND_VIRTUALENV=FIRST \
    -DMETRABS_ROS_PYTHON_EXECUTABLE="$PYTHON" \
    -DBUILD_TESTING=OFF \
    -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/ros_wheels_fix.cmake" \
    > "$BUILD_DIR/configure.log" 2>&1 \
    || { tail -40 "$BUILD_DIR/configure.log" >&2; echo "build_ros.sh: CMake configure failed (log: $BUILD_DIR/configure.log)" >&2; exit 1; }
else
  # Re-run configure only if the prefix changed; otherwise the build step re-configures by itself when needed.
  if ! grep -q "^CMAKE_INSTALL_PREFIX:PATH=$PREFIX\$" "$BUILD_DIR/CMakeCache.txt"; then
    cmake "$BUILD_DIR" -DCMAKE_INSTALL_PREFIX="$PREFIX" > "$BUILD_DIR/configure.log" 2>&1 \
      || { tail -40 "$BUILD_DIR/configure.log" >&2; exit 1; }
  fi
fi
cmake --build "$BUILD_DIR" -j "$JOBS" > "$BUILD_DIR/build.log" 2>&1 \
  || { tail -60 "$BUILD_DIR/build.log" >&2; echo "build_ros.sh: build failed (log: $BUILD_DIR/build.log)" >&2; exit 1; }
cmake --install "$BUILD_DIR" > "$BUILD_DIR/install.log" 2>&1 \
  || { tail -40 "$BUILD_DIR/install.log" >&2; echo "build_ros.sh: install failed (log: $BUILD_DIR/install.log)" >&2; exit 1; }
if [[ "$PREFIX" == "$PY_PREFIX" ]]; then
  # ament_python_install_package() (called by rosidl for the generated package) writes a setuptools egg-info
  # named like the library's pip distribution. In a venv, pip would treat it as an installed "metrabs_ros"
  # and, on `pip install -e .`, "uninstall" it by deleting site-packages/metrabs_ros (the messages included).
  # The files belong to this build, not to pip: drop the metadata.
  rm -rf "$PREFIX/$PY_INSTALL_DIR"/metrabs_ros-*.egg-info
fi
echo "$NEW_STAMP" > "$STAMP_FILE"
ELAPSED_MS=$(( ($(date +%s%N) - START_NS) / 1000000 ))
printf 'build_ros.sh: built and installed metrabs_ros into %s in %d.%03d s\n' "$PREFIX" $((ELAPSED_MS / 1000)) $((ELAPSED_MS % 1000))
if [[ "$PREFIX" != "$PY_PREFIX" ]]; then
  echo "  not the interpreter's prefix: export PYTHONPATH=$PREFIX/$PY_INSTALL_DIR LD_LIBRARY_PATH=$PREFIX/lib AMENT_PREFIX_PATH=$PREFIX:\$AMENT_PREFIX_PATH"
fi
