"""Ctrl-C / SIGTERM handling for the ``main`` of the metrabs_ros nodes.

rclpy's own signal handler shuts the ROS context down and then calls the Python-level handler that was installed
before ``rclpy.init`` (normally ``default_int_handler``, which raises ``KeyboardInterrupt`` wherever the main thread
happens to be — for a second Ctrl-C that is inside ``destroy_node()``, and ``ros2 launch`` then reports
"process has died [exit code -2]"). :class:`ShutdownSignals` installs a handler that only records the request:
the first signal ends ``executor.spin()`` through the context shutdown (rclpy's part), later ones are counted and
ignored, so the node's shutdown path (stop the worker, destroy the node) always runs to the end and the process
exits with code 0.

Install it BEFORE ``rclpy.init`` (rclpy chains to the handler it finds there)::

    signals = ShutdownSignals().install()
    rclpy.init(...)
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable, List


class ShutdownSignals:
    """Record SIGINT/SIGTERM instead of raising; optional callbacks run on the first signal (in the main thread,
    between two Python bytecodes: keep them short and non-blocking)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, name: str = 'node'):
        self.name = name
        self.count = 0
        self.requested = threading.Event()
        self._callbacks: List[Callable[[], None]] = []
        self._previous = {}

    def install(self) -> 'ShutdownSignals':
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def ignore_interrupts_from_now(self) -> None:
        """Call at the very end of ``main``: Python's finalisation puts a Python-level SIGINT handler back to
        SIG_DFL, so a late Ctrl-C (``ros2 launch`` repeating it) would kill the exiting process with code -2.
        SIG_IGN survives finalisation. SIGTERM keeps its default: an escalation to it still ends a stuck exit."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_first_signal(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 (signal handler signature)
        self.count += 1
        if self.count == 1:
            self.requested.set()
            for callback in self._callbacks:
                try:
                    callback()
                except Exception:  # a failing callback must not turn the signal into a traceback
                    pass
        elif self.count == 2:
            # one short line, no logger (the ROS context may already be gone); later signals stay silent
            print(f'[{self.name}] {signal.Signals(signum).name} again: already shutting down, please wait',
                  file=sys.stderr, flush=True)
