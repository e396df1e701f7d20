"""Run metrabs_ros nodes as separate processes on an isolated ROS domain (tests, benchmark).

Isolation: a ROS_DOMAIN_ID of our choosing, ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and the Fast DDS profile
with large shared-memory segments (config/fastdds_large_shm.xml: a 640x480 rgb8 frame does not fit the default
segment). Nodes are stopped with SIGINT so that Fast DDS removes its /dev/shm files; :func:`shared_memory_files`
lists the files a process maps, to check that afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_fastdds_profile() -> Optional[str]:
    """config/fastdds_large_shm.xml of the source tree, else of the installed package share, else None."""
    candidates = [REPO_ROOT / 'config' / 'fastdds_large_shm.xml']
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory('metrabs_ros')) / 'config' / 'fastdds_large_shm.xml')
    except Exception:
        pass
    for path in candidates:
        if path.is_file():
            return str(path)
    return None


def pick_domain_id(seed: Optional[int] = None) -> int:
    """A ROS domain id in 1..100 derived from the process id (and ``seed``), to keep parallel runs apart."""
    value = os.getpid() * 31 + (seed if seed is not None else int(time.monotonic() * 1000))
    return 1 + value % 100


def ros_environment(domain_id: int, fastdds_profile: Optional[str] = None,
                    base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for node processes on ``domain_id``, localhost-only discovery, the large-SHM profile, the
    source tree first on PYTHONPATH (so the code under test is what runs)."""
    env = dict(os.environ if base is None else base)
    env['ROS_DOMAIN_ID'] = str(int(domain_id))
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    profile = fastdds_profile or env.get('FASTDDS_DEFAULT_PROFILES_FILE') or default_fastdds_profile()
    if profile:
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = profile
    env['PYTHONPATH'] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                                                            if p])
    env['PYTHONUNBUFFERED'] = '1'
    env.setdefault('RCUTILS_COLORIZED_OUTPUT', '0')
    return env


def start_node(executable: str, ros_args: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
               log_path=None, python: str = sys.executable) -> subprocess.Popen:
    """Start ``python -m metrabs_ros.ros.<executable> --ros-args <ros_args>``; stdout+stderr go to ``log_path``
    (or a pipe)."""
    command = [python, '-m', f'metrabs_ros.ros.{executable}']
    if ros_args:
        command += ['--ros-args', *ros_args]
    output = open(log_path, 'w') if log_path else subprocess.PIPE
    process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
                               start_new_session=True)
    process.log_path = str(log_path) if log_path else None
    return process


def shared_memory_files(pid: int) -> List[str]:
    """The Fast DDS shared-memory segments that process ``pid`` owns: a segment's owner keeps its ``<segment>_el``
    lock file open (it also maps the segments of the participants it sends to, which it does not own). The shared
    ``fastdds_port*`` files are left out (other participants may keep them alive)."""
    owned = set()
    try:
        fds = os.listdir(f'/proc/{pid}/fd')
    except OSError:
        return []
    for fd in fds:
        try:
            target = os.readlink(f'/proc/{pid}/fd/{fd}')
        except OSError:
            continue
        name = os.path.basename(target)
        if target.startswith('/dev/shm/') and name.startswith(('fastdds_', 'fastrtps_')) and name.endswith('_el') \
                and '_port' not in name:
            owned.add(target[:-len('_el')])
            owned.add(target)
    return sorted(owned)


def stop_node(process: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """SIGINT (clean ROS shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return process.returncode


def read_log(process: subprocess.Popen) -> str:
    path = getattr(process, 'log_path', None)
    if path and os.path.exists(path):
        return Path(path).read_text(errors='replace')
    return ''


def spin_until(node, predicate: Callable[[], bool], timeout_s: float, executor=None) -> bool:
    """Spin ``node`` until ``predicate()`` is true or ``timeout_s`` passed; returns the predicate's last value."""
    import rclpy
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if executor is not None:
            executor.spin_once(timeout_sec=0.05)
        else:
            rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def ensure_messages(build: bool = True) -> None:
    """Make ``metrabs_ros.msg`` importable: if it is not, run scripts/build_ros.sh of the source tree (incremental,
    ~0.3 s when up to date) and re-scan the package path. Raises RuntimeError if that fails."""
    import importlib
    import importlib.util
    import pkgutil

    import metrabs_ros

    def importable():
        metrabs_ros.__path__ = pkgutil.extend_path(list(metrabs_ros.__path__), 'metrabs_ros')
        return importlib.util.find_spec('metrabs_ros.msg') is not None

    if importable():
        return
    script = REPO_ROOT / 'scripts' / 'build_ros.sh'
    if not build or not script.is_file():
        raise RuntimeError('metrabs_ros.msg is not built: run scripts/build_ros.sh (or colcon build)')
    result = subprocess.run(['bash', str(script)], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable))
    importlib.invalidate_caches()
    if result.returncode != 0 or not importable():
        raise RuntimeError(f'scripts/build_ros.sh failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}')
