"""ROS-level benchmark: demo_camera (synthetic people) -> pose_node -> this process, as separate processes.

Reports, per number of people: the ``poses3d`` publish rate, the latency from the image stamp to the arrival of
``poses3d`` here (p50/p95/max), the node's inference time, dropped input frames, and whether latency grows over
the run (slope of a line fitted to latency over time, and the median of the first vs the last 10 %).

    python -m metrabs_ros.ros.benchmark --model pose.onnx --detector det.onnx --people 1 3 --duration 300
    ros2 run metrabs_ros benchmark --fixture-models --duration 20       # test fixtures (needs torch), CPU

Prints a table and writes JSON (``--json``). Runs on an isolated ROS domain with the large-SHM Fast DDS profile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from metrabs_ros.ros.node_processes import (default_fastdds_profile, ensure_messages, pick_domain_id, read_log,
                                            ros_environment, start_node, stop_node)


def make_fixture_models(directory: str):
    """Random-weight pose model (smpl_24, 128 px crops) + colour-key detector for the synthetic flat colours."""
    from metrabs_ros.synthetic_scene import FLAT_PALETTE_RGB
    from metrabs_ros.training.colour_key_detector import make_colour_key_detector
    from metrabs_ros.training.fixtures import make_random_pose_model
    pose = make_random_pose_model(os.path.join(directory, 'pose_fixture.onnx'), resolution=128, skeleton='smpl_24')
    detector = make_colour_key_detector(os.path.join(directory, 'detector_fixture.onnx'),
                                        [tuple(int(v) for v in c) for c in FLAT_PALETTE_RGB[:5]])
    return pose, detector


def summarise(arrivals_s: np.ndarray, latencies_s: np.ndarray, inference_s: np.ndarray, duration_s: float) -> Dict:
    """Rate, latency percentiles and latency growth of one run (times relative to the start of measuring)."""
    n = len(latencies_s)
    if n < 2:
        return {'messages': int(n)}
    slope_s_per_s = float(np.polyfit(arrivals_s, latencies_s, 1)[0])
    tenth = max(n // 10, 1)
    return {
        'messages': int(n),
        'rate_hz': float(n / duration_s),
        'latency_p50_ms': float(np.percentile(latencies_s, 50) * 1e3),
        'latency_p95_ms': float(np.percentile(latencies_s, 95) * 1e3),
        'latency_max_ms': float(latencies_s.max() * 1e3),
        'inference_p50_ms': float(np.percentile(inference_s, 50) * 1e3),
        'latency_first10pct_p50_ms': float(np.median(latencies_s[:tenth]) * 1e3),
        'latency_last10pct_p50_ms': float(np.median(latencies_s[-tenth:]) * 1e3),
        'latency_slope_ms_per_min': slope_s_per_s * 1e3 * 60,
        # latency minus the node's inference time: transport + waiting; grows only if frames queue up
        'wait_first10pct_p50_ms': float(np.median((latencies_s - inference_s)[:tenth]) * 1e3),
        'wait_last10pct_p50_ms': float(np.median((latencies_s - inference_s)[-tenth:]) * 1e3),
        'inference_first10pct_p50_ms': float(np.median(inference_s[:tenth]) * 1e3),
        'inference_last10pct_p50_ms': float(np.median(inference_s[-tenth:]) * 1e3),
    }


def run_once(pose_model: str, detector: str, num_people: int, rate_hz: float, duration_s: float, warmup_s: float,
             image_hw, num_aug: int, backend: str, log_dir: str, domain_id: int) -> Dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy

    from metrabs_ros.msg import Poses3D
    env = ros_environment(domain_id)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node('metrabs_ros_benchmark', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    records: List = []
    diagnostics: List = []
    qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
    node.create_subscription(Poses3D, 'poses3d', lambda m: records.append(
        (time.monotonic(), node.get_clock().now().nanoseconds, m.header.stamp.sec * 10**9 + m.header.stamp.nanosec,
         m.inference_time_s, len(m.people))), qos)
    node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    pose = start_node('pose_node', [
        '-p', f'model_path:={pose_model}', '-p', f'detector_path:={detector}', '-p', f'num_aug:={num_aug}',
        '-p', f'backend:={backend}', '-p', 'suppress_implausible_poses:=false'],
        env=env, log_path=os.path.join(log_dir, f'pose_node_{num_people}.log'))
    demo = start_node('demo_camera', [
        '-p', f'num_people:={num_people}', '-p', f'rate_hz:={rate_hz}', '-p', f'width:={image_hw[1]}',
        '-p', f'height:={image_hw[0]}', '-p', 'synthetic_frames:=60', '-p', 'wait_for_subscribers:=1',
        '-p', 'publish_ground_truth:=false'], env=env, log_path=os.path.join(log_dir, f'demo_{num_people}.log'))
    try:
        deadline = time.monotonic() + 120
        while not records and time.monotonic() < deadline:
            if pose.poll() is not None:
                raise RuntimeError(f'pose_node exited ({pose.returncode}):\n{read_log(pose)[-2000:]}')
            executor.spin_once(timeout_sec=0.05)
        if not records:
            raise RuntimeError(f'no poses3d within 120 s:\n{read_log(pose)[-2000:]}\n{read_log(demo)[-2000:]}')
        measure_start = time.monotonic() + warmup_s
        end = measure_start + duration_s
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        values = {}
        for msg in reversed(diagnostics):
            for status in msg.status:
                if status.name.startswith('pose_node'):
                    values = {kv.key: kv.value for kv in status.values}
                    break
            if values:
                break
    finally:
        stop_node(demo)
        stop_node(pose)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    rows = np.array([r for r in records if measure_start <= r[0] <= end], np.float64).reshape(-1, 5)
    summary = summarise(rows[:, 0] - measure_start, (rows[:, 1] - rows[:, 2]) / 1e9, rows[:, 3], duration_s)
    summary.update({
        'people': num_people, 'people_found_mean': float(rows[:, 4].mean()) if len(rows) else 0.0,
        'input_rate_hz': rate_hz, 'duration_s': duration_s,
        'frames_received': int(values.get('frames_received', 0) or 0),
        'frames_dropped': int(values.get('frames_dropped', 0) or 0),
        'backend': values.get('backend', ''),
    })
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if '--ros-args' in argv:               # (when started through ros2 run with ROS arguments: ignore them)
        argv = argv[:argv.index('--ros-args')]
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', help='pose model .onnx')
    parser.add_argument('--detector', help='person detector .onnx (must find the synthetic people)')
    parser.add_argument('--fixture-models', action='store_true',
                        help='use freshly generated test fixtures (random pose model + colour-key detector)')
    parser.add_argument('--people', type=int, nargs='+', default=[1, 3])
    parser.add_argument('--rate', type=float, default=30.0, help='demo camera rate (Hz)')
    parser.add_argument('--duration', type=float, default=30.0, help='measured seconds per run (e.g. 300)')
    parser.add_argument('--warmup', type=float, default=3.0, help='seconds ignored after the first result')
    parser.add_argument('--size', default='640x480', help='WxH of the synthetic images')
    parser.add_argument('--num-aug', type=int, default=1)
    parser.add_argument('--backend', default='auto')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument('--domain-id', type=int, default=None)
    args = parser.parse_args(argv)
    ensure_messages(build=False)
    width, height = (int(v) for v in args.size.lower().split('x'))
    with tempfile.TemporaryDirectory(prefix='metrabs_ros_benchmark_') as tmp:
        if args.fixture_models:
            pose_model, detector = make_fixture_models(tmp)
        elif args.model and args.detector:
            pose_model, detector = args.model, args.detector
        else:
            parser.error('give --model and --detector, or --fixture-models')
        results = []
        for people in args.people:
            domain = args.domain_id if args.domain_id is not None else pick_domain_id(people)
            print(f'benchmark: {people} people, {width}x{height} at {args.rate} Hz for {args.duration} s '
                  f'(ROS domain {domain}) ...', flush=True)
            results.append(run_once(pose_model, detector, people, args.rate, args.duration, args.warmup,
                                    (height, width), args.num_aug, args.backend, tmp, domain))
    print(f'\n{"people":>6} {"rate Hz":>8} {"lat p50":>8} {"lat p95":>8} {"lat max":>8} {"infer":>7} '
          f'{"dropped":>8} {"lat first/last 10% p50":>23} {"wait first/last 10%":>20} {"slope ms/min":>12}')
    for r in results:
        if r.get('messages', 0) < 2:
            print(f'{r["people"]:>6}  (fewer than 2 results)')
            continue
        print(f'{r["people"]:>6} {r["rate_hz"]:8.1f} {r["latency_p50_ms"]:7.1f}ms {r["latency_p95_ms"]:7.1f}ms '
              f'{r["latency_max_ms"]:7.1f}ms {r["inference_p50_ms"]:6.1f}ms {r["frames_dropped"]:8d} '
              f'{r["latency_first10pct_p50_ms"]:10.1f} / {r["latency_last10pct_p50_ms"]:7.1f} ms '
              f'{r["wait_first10pct_p50_ms"]:8.1f} / {r["wait_last10pct_p50_ms"]:6.1f} ms '
              f'{r["latency_slope_ms_per_min"]:12.2f}')
    report = {'machine': platform.node(), 'python': platform.python_version(), 'image_size': [width, height],
              'input_rate_hz': args.rate, 'num_aug': args.num_aug, 'fixture_models': bool(args.fixture_models),
              'fastdds_profile': default_fastdds_profile(), 'results': results}
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
