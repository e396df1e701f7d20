"""Forward the library's Python ``logging`` records to a ROS logger (console with the node's name + ``/rosout``).

The library (estimator, ONNX Runtime / GPU backends) logs through ``logging.getLogger('metrabs_ros....')``, e.g.
"backend 'cuda': execution providers ... are not available ...; falling back to the CPU". Inside a node those
lines belong in the ROS log like every other node-side warning. :func:`forward_library_logging` attaches a
:class:`RosLoggingHandler` to the ``metrabs_ros`` logger for the lifetime of the node and stops propagation to the
root logger meanwhile (so a line appears once, from the ROS logger), and returns a function that undoes it.
"""

from __future__ import annotations

import logging
from typing import Callable

LIBRARY_LOGGER = 'metrabs_ros'


class RosLoggingHandler(logging.Handler):
    """A ``logging.Handler`` that writes each record through an rclpy logger at the matching severity."""

    def __init__(self, ros_logger, level: int = logging.INFO):
        super().__init__(level)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += '\n' + logging.Formatter().formatException(record.exc_info)
            text = f'[{record.name}] {message}'
            if record.levelno >= logging.CRITICAL:
                self.ros_logger.fatal(text)
            elif record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # logging must never raise into the library
            self.handleError(record)


def forward_library_logging(ros_logger, level: int = logging.INFO) -> Callable[[], None]:
    """Route ``metrabs_ros.*`` log records (``level`` and above) to ``ros_logger``; returns the undo function."""
    library = logging.getLogger(LIBRARY_LOGGER)
    handler = RosLoggingHandler(ros_logger, level)
    previous = (library.level, library.propagate)
    library.addHandler(handler)
    if library.level == logging.NOTSET or library.level > level:
        library.setLevel(level)
    library.propagate = False

    def undo() -> None:
        library.removeHandler(handler)
        library.setLevel(previous[0])
        library.propagate = previous[1]

    return undo
