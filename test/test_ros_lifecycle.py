"""pose_lifecycle_node: the managed variant, driven over its lifecycle services from another process."""

import pytest

from metrabs_ros.ros.node_processes import read_log
from test_ros_nodes import Harness, messages, pose_params  # noqa: F401

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture
def ros(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def _change_state(ros, transition_id, process):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    client = ros.node.create_client(ChangeState, '/pose_node/change_state')
    ros.spin_until(client.service_is_ready, 60, 'change_state service', process)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    ros.spin_until(future.done, 120, f'transition {transition_id}', process)
    ros.node.destroy_client(client)
    return future.result().success


def _state(ros, process):
    from lifecycle_msgs.srv import GetState
    client = ros.node.create_client(GetState, '/pose_node/get_state')
    ros.spin_until(client.service_is_ready, 60, 'get_state service', process)
    future = client.call_async(GetState.Request())
    ros.spin_until(future.done, 30, 'get_state', process)
    ros.node.destroy_client(client)
    return future.result().current_state.label


def test_lifecycle_configure_activate_deactivate_cleanup(ros, fixture_pose_model, colour_key_detector):
    from lifecycle_msgs.msg import Transition

    from metrabs_ros.msg import Poses3D
    poses = ros.subscribe(Poses3D, 'poses3d')
    pose = ros.start('pose_lifecycle_node', pose_params(fixture_pose_model, colour_key_detector, warmup=False))
    assert _state(ros, pose) == 'unconfigured'
    assert ros.node.count_publishers('poses3d') == 0 and ros.node.count_subscribers('image') == 0

    assert _change_state(ros, Transition.TRANSITION_CONFIGURE, pose)
    assert _state(ros, pose) == 'inactive'
    ros.spin_until(lambda: ros.node.count_publishers('poses3d') == 1, 30, 'poses3d publisher after configure', pose)
    assert ros.node.count_subscribers('image') == 0              # configured, not yet subscribed
    assert 'models loaded' in read_log(pose)

    assert _change_state(ros, Transition.TRANSITION_ACTIVATE, pose)
    ros.spin_until(lambda: ros.node.count_subscribers('image') == 1, 30, 'image subscription after activate', pose)
    demo = ros.start('demo_camera', {'num_people': 1, 'synthetic_frames': 3, 'rate_hz': 10.0,
                                     'wait_for_subscribers': 1, 'publish_ground_truth': False})
    ros.spin_until(lambda: len(poses) >= 2, 60, 'poses3d while active', pose)

    assert _change_state(ros, Transition.TRANSITION_DEACTIVATE, pose)
    ros.spin_until(lambda: ros.node.count_subscribers('image') == 0, 30, 'no image subscription', pose)
    assert _state(ros, pose) == 'inactive'
    assert _change_state(ros, Transition.TRANSITION_CLEANUP, pose)
    ros.spin_until(lambda: ros.node.count_publishers('poses3d') == 0, 30, 'no poses3d publisher', pose)
    assert _state(ros, pose) == 'unconfigured'
    ros.stop(demo)
    ros.stop(pose)
    assert 'Traceback' not in read_log(pose)


def test_lifecycle_configure_fails_cleanly_on_a_missing_model(ros, tmp_path, colour_key_detector):
    from lifecycle_msgs.msg import Transition
    pose = ros.start('pose_lifecycle_node', {'model_path': str(tmp_path / 'missing.onnx'),
                                             'detector_path': colour_key_detector})
    assert not _change_state(ros, Transition.TRANSITION_CONFIGURE, pose)
    assert _state(ros, pose) == 'unconfigured'
    assert 'missing.onnx' in read_log(pose)
    ros.stop(pose)
