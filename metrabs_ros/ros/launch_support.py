"""Helpers for launch/pose.launch.py that need no ``launch`` package (so they can be tested anywhere).

:func:`find_executable` resolves an optional package's executable through the ament index at launch time: the
launch file starts RViz only when ``rviz2`` resolves, and otherwise logs :func:`missing_message` and runs the rest
(``ros2 launch`` would abort the whole launch on an unresolvable package, leaving already started nodes orphaned).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple


def find_executable(package: str, executable: str) -> Tuple[Optional[str], str]:
    """``(path, '')`` of ``<prefix>/lib/<package>/<executable>`` from the ament index (AMENT_PREFIX_PATH), or
    ``(None, reason)``."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError as error:
        return None, f'ament_index_python is not importable ({error})'
    try:
        prefix = get_package_prefix(package)
    except (PackageNotFoundError, ValueError, LookupError):
        searched = os.environ.get('AMENT_PREFIX_PATH', '') or '(AMENT_PREFIX_PATH is empty)'
        return None, f"package '{package}' is not installed (not in the ament index of {searched})"
    path = os.path.join(prefix, 'lib', package, executable)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return None, f"package '{package}' has no executable '{executable}' ({path})"
    return path, ''


def missing_message(argument: str, package: str, reason: str, install_hint: str) -> str:
    return (f'{argument}:=true but {reason}: not starting {package}; the rest of the launch runs. '
            f'{install_hint}')
