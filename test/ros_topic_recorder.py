"""Independent subscriber for the ROS tests, run as its own process: records topics as JSON lines.

    python test/ros_topic_recorder.py OUT.jsonl TOPIC:pkg/msg/Type [TOPIC:pkg/msg/Type ...] [--hri-bodies]

Each received message becomes one line ``{"topic": ..., "msg": {...}}`` (flushed at once). ``--hri-bodies`` does
what a ROS4HRI consumer does: for every id on /humans/bodies/tracked it subscribes
/humans/bodies/<id>/skeleton2d and /roi. Runs until SIGINT. Needs the message packages importable (the tests put
the test-only tf2_msgs / hri_msgs prefix on PYTHONPATH and LD_LIBRARY_PATH of this process).
"""

import importlib
import json
import signal
import sys


def message_type(name):
    package, kind, type_name = name.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), type_name)


def to_dict(msg):
    if hasattr(msg, 'get_fields_and_field_types'):
        return {field: to_dict(getattr(msg, field)) for field in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple)) or type(msg).__name__ == 'ndarray' or type(msg).__name__ == 'array':
        return [to_dict(item) for item in msg]
    if isinstance(msg, float) and msg != msg:
        return 'nan'
    return msg


def main(argv):
    import rclpy
    from rclpy.qos import QoSProfile, QoSReliabilityPolicy
    out_path, specs = argv[0], [a for a in argv[1:] if not a.startswith('--')]
    hri_bodies = '--hri-bodies' in argv
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    rclpy.init()
    node = rclpy.create_node('independent_test_subscriber')
    qos = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE)
    out = open(out_path, 'a', buffering=1)
    subscribed = set()

    def subscribe(topic, type_name):
        if topic in subscribed:
            return
        subscribed.add(topic)
        node.create_subscription(message_type(type_name), topic,
                                 lambda m, t=topic: out.write(json.dumps({'topic': t, 'msg': to_dict(m)}) + '\n'),
                                 qos)

    for spec in specs:
        topic, type_name = spec.rsplit(':', 1)
        subscribe(topic, type_name)
    if hri_bodies:
        def on_tracked(msg):
            out.write(json.dumps({'topic': '/humans/bodies/tracked', 'msg': to_dict(msg)}) + '\n')
            for body_id in msg.ids:
                subscribe(f'/humans/bodies/{body_id}/skeleton2d', 'hri_msgs/msg/Skeleton2D')
                subscribe(f'/humans/bodies/{body_id}/roi', 'hri_msgs/msg/NormalizedRegionOfInterest2D')
        subscribed.add('/humans/bodies/tracked')
        node.create_subscription(message_type('hri_msgs/msg/IdsList'), '/humans/bodies/tracked', on_tracked, qos)
    out.write(json.dumps({'topic': '__ready__', 'msg': {}}) + '\n')
    while not stop and rclpy.ok():
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    out.close()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
