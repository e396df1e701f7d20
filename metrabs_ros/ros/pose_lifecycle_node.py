"""ROS 2 node ``pose_lifecycle_node``: :mod:`pose_node` as a managed (lifecycle) node, as ROS 2 perception drivers
offer it. Same parameters, topics and outputs; the plain ``pose_node`` stays the default executable.

Transitions (``ros2 lifecycle set /pose_node configure`` etc., or a lifecycle manager such as nav2's):
  configure   loads and warms up the models, creates the publishers (poses3d, markers, debug_image, /diagnostics,
              /tf and ROS4HRI when enabled); a model that cannot load -> FAILURE, the node stays unconfigured
  activate    subscribes image (or <image>/compressed) and camera_info, starts the inference worker and diagnostics
  deactivate  unsubscribes and stops the worker (a frame in flight is not published)
  cleanup     destroys the publishers and drops the models (back to unconfigured)
  shutdown    from any state: all of the above that applies
The node name is ``pose_node`` (as the plain node), so parameter files and remappings are shared.

Run: ``ros2 run metrabs_ros pose_lifecycle_node --ros-args -p model_path:=...`` (``python -m
metrabs_ros.ros.pose_lifecycle_node``); it starts unconfigured.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from metrabs_ros.ros.pose_node import (EXIT_OK, EXIT_STARTUP_ERROR, StartupError, _make_node_class,
                                       run_until_shutdown)
from metrabs_ros.ros.shutdown import ShutdownSignals


def _make_lifecycle_node_class():
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

    class PoseLifecycleNode(_make_node_class(LifecycleNode)):
        """Managed pose node (see the module docstring)."""

        def on_configure(self, state):
            try:
                self.load_models()
                self.create_outputs()
            except StartupError as error:
                self.get_logger().error(f'configure failed: {error}')
                self.destroy_outputs()
                self.estimator = None
                return TransitionCallbackReturn.FAILURE
            self.get_logger().info(f'configured: models loaded ({self.backend_name})')
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state):
            self.create_inputs()
            return super().on_activate(state)

        def on_deactivate(self, state):
            self.destroy_inputs()
            self.get_logger().info('deactivated: not subscribed any more')
            return super().on_deactivate(state)

        def on_cleanup(self, state):
            self.destroy_inputs()
            self.destroy_outputs()
            self.estimator = None
            self.get_logger().info('cleaned up: publishers destroyed, models released')
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state):
            self.destroy_inputs()
            self.destroy_outputs()
            self.estimator = None
            return TransitionCallbackReturn.SUCCESS

        def on_error(self, state):
            self.destroy_inputs()
            self.destroy_outputs()
            self.estimator = None
            return TransitionCallbackReturn.SUCCESS

    return PoseLifecycleNode


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pose_lifecycle_node`` executable (starts unconfigured); exit code 0 after Ctrl-C."""
    import rclpy

    signals = ShutdownSignals('pose_lifecycle_node').install()   # before rclpy.init (rclpy chains to it)
    rclpy.init(args=list(sys.argv if argv is None else argv))
    node = None
    exit_code = EXIT_OK
    try:
        node = _make_lifecycle_node_class()()
        signals.on_first_signal(node.request_stop)
        node.get_logger().info('unconfigured: waiting for the configure transition')
        run_until_shutdown(node, signals)
    except StartupError:
        exit_code = EXIT_STARTUP_ERROR      # invalid parameters (logged by the constructor)
    except Exception:
        if not signals.requested.is_set():
            raise
    finally:
        if node is not None:
            node.destroy_inputs()
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
        signals.ignore_interrupts_from_now()
    return exit_code


if __name__ == '__main__':
    sys.exit(main())
