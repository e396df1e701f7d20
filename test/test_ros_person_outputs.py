"""Person TF frames and the ROS4HRI body interface of pose_node, checked by an independent subscriber process
(test/ros_topic_recorder.py) with the test-only tf2_msgs / hri_msgs packages (test/msg_packages, built into
build/test_msgs; never installed with metrabs_ros). Also: without those packages, one warning and the rest runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metrabs_ros.ros.node_processes import read_log, stop_node
from test_ros_nodes import Harness, messages, pose_params  # noqa: F401

pytestmark = [pytest.mark.ros, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def test_msgs_site():
    """Build (or find up to date) the test-only message packages; their Python directory."""
    result = subprocess.run(['bash', str(REPO / 'test' / 'msg_packages' / 'build_test_msgs.sh')], capture_output=True,
                            text=True, env=dict(os.environ, PYTHON=sys.executable), timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def _with_test_msgs(env, site):
    env = dict(env)
    prefix = str(Path(site).parents[2])
    env['PYTHONPATH'] = os.pathsep.join([env['PYTHONPATH'], site])
    env['LD_LIBRARY_PATH'] = os.pathsep.join(p for p in [f'{prefix}/lib', env.get('LD_LIBRARY_PATH', '')] if p)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(p for p in [prefix, env.get('AMENT_PREFIX_PATH', '')] if p)
    return env


@pytest.fixture
def ros(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def _records(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_tf_frames_and_ros4hri_bodies(ros, tmp_path, test_msgs_site, fixture_pose_model_multi, colour_key_detector):
    from metrabs_ros.msg import Poses3D
    ros.env = _with_test_msgs(ros.env, test_msgs_site)
    out = tmp_path / 'recorded.jsonl'
    recorder = subprocess.Popen([sys.executable, str(REPO / 'test' / 'ros_topic_recorder.py'), str(out),
                                 '/tf:tf2_msgs/msg/TFMessage', '--hri-bodies'], env=ros.env,
                                stdout=open(tmp_path / 'recorder.log', 'w'), stderr=subprocess.STDOUT)
    ros.processes.append(recorder)
    ros.spin_until(lambda: any(r['topic'] == '__ready__' for r in _records(out)), 60, 'recorder ready')
    poses = ros.subscribe(Poses3D, 'poses3d', depth=200)
    pose = ros.start('pose_node', pose_params(fixture_pose_model_multi, colour_key_detector, warmup=False,
                                              skeleton='coco_19', publish_tf=True, publish_hri=True))
    demo = ros.start('demo_camera', {'num_people': 2, 'synthetic_frames': 6, 'rate_hz': 5.0, 'seed': 3,
                                     'wait_for_subscribers': 1, 'publish_ground_truth': False})

    def recorded(kind):
        return [r for r in _records(out) if r['topic'].endswith(kind)]
    def tf_with_known_stamp():
        # this process's own /poses3d subscription may match later than the recorder's: count only the TF
        # transforms of images whose poses3d (with people) this process has received
        stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m, _ in poses if m.people}
        return sum((t['header']['stamp']['sec'], t['header']['stamp']['nanosec']) in stamps
                   for r in recorded('/tf') for t in r['msg']['transforms'])
    ros.spin_until(lambda: len(recorded('/skeleton2d')) >= 4 and len(recorded('/roi')) >= 4
                   and tf_with_known_stamp() >= 4, 120, 'TF, skeleton2d and roi in the recorder', pose)
    ros.stop(demo)
    ros.stop(pose)
    stop_node(recorder)
    records = _records(out)
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m, _ in poses if m.people}
    assert by_stamp, f'no poses3d with people ({len(poses)} poses3d messages, {len(records)} records)'

    # /tf: person_<id> and body_b<id> at the root joint, parent = optical frame, stamp = image stamp
    checked_tf = 0
    for record in (r for r in records if r['topic'] == '/tf'):
        for transform in record['msg']['transforms']:
            stamp = (transform['header']['stamp']['sec'], transform['header']['stamp']['nanosec'])
            msg = by_stamp.get(stamp)
            if msg is None:
                continue
            assert transform['header']['frame_id'] == 'camera_optical_frame'
            child = transform['child_frame_id']
            person_id = int(child[len('person_'):]) if child.startswith('person_') else int(child[len('body_b'):])
            assert child in (f'person_{person_id}', f'body_b{person_id}')
            person = next(p for p in msg.people if p.id == person_id)
            translation = transform['transform']['translation']
            assert [translation['x'], translation['y'], translation['z']] == pytest.approx(
                [person.position.x, person.position.y, person.position.z], abs=1e-9)
            assert transform['transform']['rotation']['w'] == 1.0
            checked_tf += 1
    assert checked_tf >= 4

    # /humans/bodies/tracked = the ids of each image; per-body skeleton2d (18 points in [0, 1]) and roi
    tracked = [r['msg'] for r in records if r['topic'] == '/humans/bodies/tracked']
    for ids_msg in tracked:
        stamp = (ids_msg['header']['stamp']['sec'], ids_msg['header']['stamp']['nanosec'])
        if stamp in by_stamp:
            assert sorted(ids_msg['ids']) == sorted(f'b{p.id}' for p in by_stamp[stamp].people)
    for record in (r for r in records if r['topic'].endswith('/skeleton2d')):
        body_id = record['topic'].split('/')[3]
        msg = by_stamp.get((record['msg']['header']['stamp']['sec'], record['msg']['header']['stamp']['nanosec']))
        points = record['msg']['skeleton']
        assert len(points) == 18
        assert all(0.0 <= p['x'] <= 1.0 and 0.0 <= p['y'] <= 1.0 for p in points)
        if msg is not None:
            person = next(p for p in msg.people if f'b{p.id}' == body_id)
            neck = msg.joint_names.index('neck')                      # Skeleton2D.NECK = 1
            assert points[1]['x'] == pytest.approx(person.joints_2d[neck].x_px / 640, abs=1e-5)
            assert points[1]['y'] == pytest.approx(person.joints_2d[neck].y_px / 480, abs=1e-5)
    for record in (r for r in records if r['topic'].endswith('/roi')):
        roi = record['msg']
        assert 0.0 <= roi['xmin'] < roi['xmax'] <= 1.0 and 0.0 <= roi['ymin'] < roi['ymax'] <= 1.0
        assert 0.0 < roi['c'] <= 1.0


def test_missing_message_packages_give_one_warning_and_the_node_runs(ros, fixture_pose_model, colour_key_detector):
    try:
        import hri_msgs  # noqa: F401
        import tf2_msgs  # noqa: F401
        pytest.skip('tf2_msgs and hri_msgs are installed here')
    except ImportError:
        pass
    from metrabs_ros.msg import Poses3D
    poses = ros.subscribe(Poses3D, 'poses3d')
    pose = ros.start('pose_node', pose_params(fixture_pose_model, colour_key_detector, warmup=False,
                                              publish_tf=True, publish_hri=True))
    demo = ros.start('demo_camera', {'num_people': 1, 'synthetic_frames': 3, 'rate_hz': 10.0,
                                     'wait_for_subscribers': 1, 'publish_ground_truth': False})
    ros.spin_until(lambda: len(poses) >= 2, 60, 'poses3d', pose)
    ros.stop(demo)
    ros.stop(pose)
    log = read_log(pose)
    assert log.count('the tf2_msgs package is not installed') == 1, log
    assert log.count('the hri_msgs package is not installed') == 1, log
    assert 'Traceback' not in log
