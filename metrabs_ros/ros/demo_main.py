"""The main job in one command: demo camera + pose node as separate ROS processes, and this process listening.

    python -m metrabs_ros.ros.demo_main [--people 2] [--frames 90] [--rate 15] [--out generated/demo]
    python -m metrabs_ros.ros.demo_main --video /usr/share/doc/opencv-doc/examples/data/vtest.avi   # real people

It starts ``demo_camera`` (a synthetic scene of walking people with exact ground truth, or ``--video``: real
footage, no ground truth, CameraInfo from the 55 degree field-of-view guess) and ``pose_node`` on an
isolated ROS domain, subscribes to ``image``, ``poses3d`` and ``ground_truth/poses3d``, prints one line per
``poses3d`` message (people, their positions in metres, the error against the ground truth, latency), writes an
annotated video (2D skeletons + a 3D view) and a JSON summary under ``--out``.

Models: ``--model``/``--detector``, else the embedded defaults. When the package has no trained embedded models
yet, it generates the test-fixture networks (needs PyTorch) and says so loudly: they exercise the whole pipeline,
but their skeletons do not follow the image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from metrabs_ros import embedded_models
from metrabs_ros.ros.node_processes import (ensure_messages, pick_domain_id, read_log, ros_environment,
                                            start_node, stop_node)

FIXTURE_NOTICE = """
******************************************************************************************************
* No trained embedded model is installed in this build (the default models come from issue #5).      *
* Running the full pipeline with generated TEST-FIXTURE networks: detection, crops, reconstruction,  *
* metres, markers and timing are real, but the skeletons do NOT follow the people in the image.      *
******************************************************************************************************
"""


def resolve_models(args, work_dir: Path):
    """(pose model, detector, uses_fixtures)."""
    model = args.model or (str(embedded_models.default_pose_model_path())
                           if embedded_models.default_pose_model_path().is_file() else None)
    detector = args.detector or (str(embedded_models.default_detector_path())
                                 if embedded_models.default_detector_path().is_file() else None)
    if model and detector:
        return model, detector, False
    print(FIXTURE_NOTICE, flush=True)
    from metrabs_ros.ros.benchmark import make_fixture_models
    work_dir.mkdir(parents=True, exist_ok=True)
    fixture_model, fixture_detector = make_fixture_models(str(work_dir))
    return model or fixture_model, detector or fixture_detector, True


# The synthetic demo world's capsule people (bald, untextured) look less human to the real-photo detector than
# real people do: on its frames the embedded NanoDet finds 62 % of them at its recommended threshold 0.5 and 82 %
# at 0.3 (with 2 false positives in 15 frames; scripts/measure_detector_extras.py demo-world), so the synthetic
# demo runs the node at 0.3. Real footage (--video)
# uses the detector's own recommendation (the node's -1).
SYNTHETIC_WORLD_DETECTOR_THRESHOLD = 0.3


def detector_threshold(args) -> float:
    if args.detector_threshold is not None:
        return args.detector_threshold
    return -1.0 if args.video else SYNTHETIC_WORLD_DETECTOR_THRESHOLD


def stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


class PoseResultView:
    """The attributes visualization.py draws, from a Poses3D message (converted back to mm / px)."""

    def __init__(self, arrays):
        self.boxes = np.concatenate([arrays['boxes_xywh_px'], arrays['scores'][:, None]], axis=1)
        self.poses3d_mm = arrays['joints_m'] * 1000.0
        self.poses2d_px = arrays['joints_2d_px']
        self.joint_edges = arrays['edges']


def match_ground_truth(positions_m: np.ndarray, gt_positions_m: np.ndarray):
    """Greedy nearest matching of estimated to true root positions; returns per-estimate error in m (nan if
    unmatched)."""
    errors = np.full(len(positions_m), np.nan)
    if len(positions_m) == 0 or len(gt_positions_m) == 0:
        return errors
    distances = np.linalg.norm(positions_m[:, None] - gt_positions_m[None], axis=-1)
    used = set()
    for i in np.argsort(distances.min(axis=1)):
        for j in np.argsort(distances[i]):
            if j not in used:
                used.add(j)
                errors[i] = distances[i, j]
                break
    return errors


def run_demo(args) -> dict:
    import cv2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image

    from metrabs_ros.msg import Poses3D
    from metrabs_ros.ros.image_conversion import image_msg_to_rgb
    from metrabs_ros.ros.pose_messages import poses3d_msg_to_arrays
    from metrabs_ros.visualization import draw_poses_2d, draw_poses_3d

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, detector, fixtures = resolve_models(args, out / 'models')
    domain_id = pick_domain_id()
    env = ros_environment(domain_id)
    print(f'pose model: {model}\ndetector:   {detector}\nROS domain: {domain_id}; logs in {out}', flush=True)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node('metrabs_ros_demo_listener', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    qos = QoSProfile(depth=200, reliability=QoSReliabilityPolicy.RELIABLE)
    images, truths, results = {}, {}, []
    node.create_subscription(Image, 'image', lambda m: images.__setitem__(stamp_ns(m.header), m), qos)
    node.create_subscription(Poses3D, 'ground_truth/poses3d',
                             lambda m: truths.__setitem__(stamp_ns(m.header), m), qos)
    node.create_subscription(Poses3D, 'poses3d', lambda m: results.append((time.time(), m)), qos)

    pose = start_node('pose_node', [
        '-p', f'model_path:={model}', '-p', f'detector_path:={detector}', '-p', f'num_aug:={args.num_aug}',
        '-p', 'suppress_implausible_poses:=' + ('false' if fixtures else 'true'),
        '-p', f'detector_threshold:={detector_threshold(args)}'],
        env=env, log_path=out / 'pose_node.log')
    source = ['-p', f'source:={os.path.abspath(args.video)}'] if args.video else []
    demo = start_node('demo_camera', source + [
        '-p', f'num_people:={args.people}', '-p', f'rate_hz:={args.rate}', '-p', f'max_frames:={args.frames}',
        '-p', f'synthetic_frames:={min(args.frames, 120)}', '-p', 'wait_for_subscribers:=2',
        '-p', f'flat_colours:={"true" if fixtures else "false"}', '-p', 'loop:=true'],
        env=env, log_path=out / 'demo_camera.log')
    video_path = out / 'annotated.mp4'
    writer = None
    lines, errors_m, latencies_s, people_counts = [], [], [], []
    written = 0
    start = time.monotonic()
    try:
        deadline = start + args.timeout
        idle_since = None
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if pose.poll() is not None:
                raise RuntimeError(f'pose_node exited with {pose.returncode}:\n{read_log(pose)[-3000:]}')
            while written < len(results):
                arrival, msg = results[written]
                written += 1
                key = stamp_ns(msg.header)
                arrays = poses3d_msg_to_arrays(msg)
                latency = arrival - key / 1e9
                latencies_s.append(latency)
                people_counts.append(len(msg.people))
                truth = truths.get(key)
                err = match_ground_truth(arrays['positions_m'], poses3d_msg_to_arrays(truth)['positions_m']) \
                    if truth is not None else np.full(len(msg.people), np.nan)
                errors_m.extend(err[np.isfinite(err)].tolist())
                people = ', '.join(
                    f'#{pid} at ({x:+.2f}, {y:+.2f}, {z:.2f}) m' + (f' [GT {e:.2f} m off]' if np.isfinite(e) else '')
                    for pid, (x, y, z), e in zip(arrays['ids'], arrays['positions_m'], err))
                line = (f'poses3d {written:4d} stamp {key / 1e9:.3f} frame {msg.header.frame_id}: '
                        f'{len(msg.people)} people{": " if people else ""}{people} | latency {latency * 1e3:.0f} ms')
                print(line, flush=True)
                lines.append(line)
                image_msg = images.pop(key, None)
                if image_msg is not None:
                    rgb = image_msg_to_rgb(image_msg)
                    view = PoseResultView(arrays)
                    frame = np.concatenate([draw_poses_2d(rgb, view, ids=arrays['ids']),
                                            draw_poses_3d(view, size_px=rgb.shape[0], ids=arrays['ids'])], axis=1)
                    if writer is None:
                        writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*'mp4v'), float(args.rate),
                                                 (frame.shape[1], frame.shape[0]))
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            if demo.poll() is not None:   # the camera published its frames: wait for the last results
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 3.0:
                    break
    finally:
        stop_node(demo)
        stop_node(pose)
        if writer is not None:
            writer.release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    elapsed = time.monotonic() - start
    summary = {
        'models': {'pose': model, 'detector': detector, 'test_fixtures': fixtures},
        'frames_published': args.frames, 'poses3d_received': len(results),
        'rate_hz': len(results) / elapsed if elapsed > 0 else 0.0,
        'people_per_message_mean': float(np.mean(people_counts)) if people_counts else 0.0,
        'latency_ms_p50': float(np.percentile(latencies_s, 50) * 1e3) if latencies_s else None,
        'latency_ms_p95': float(np.percentile(latencies_s, 95) * 1e3) if latencies_s else None,
        'root_error_m_median': float(np.median(errors_m)) if errors_m else None,
        'annotated_video': str(video_path) if writer is not None else None,
    }
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    (out / 'poses3d.log').write_text('\n'.join(lines) + '\n')
    print('\nsummary: ' + json.dumps(summary, indent=2))
    if fixtures:
        print('(test-fixture networks: root errors are not a measure of accuracy)')
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='metrabs_ros demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model')
    parser.add_argument('--detector')
    parser.add_argument('--people', type=int, default=2)
    parser.add_argument('--frames', type=int, default=90, help='frames the demo camera publishes')
    parser.add_argument('--rate', type=float, default=15.0, help='demo camera rate (Hz)')
    parser.add_argument('--num-aug', type=int, default=1)
    parser.add_argument('--out', default='generated/demo')
    parser.add_argument('--timeout', type=float, default=300.0)
    parser.add_argument('--video', help='real footage instead of the synthetic world (no ground truth), e.g. '
                                        '/usr/share/doc/opencv-doc/examples/data/vtest.avi (Debian opencv-doc)')
    parser.add_argument('--detector-threshold', type=float, default=None,
                        help='person score threshold of the node (default: 0.3 in the synthetic world, the '
                             "detector's recommendation (-1) on --video)")
    args = parser.parse_args(argv)
    ensure_messages()
    summary = run_demo(args)
    return 0 if summary['poses3d_received'] > 0 else 1


if __name__ == '__main__':
    sys.exit(main())
