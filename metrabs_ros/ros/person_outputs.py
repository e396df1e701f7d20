"""Per-person outputs built from a ``metrabs_ros/Poses3D`` message: TF frames and the ROS4HRI body interface.

TF (``publish_tf``): one ``geometry_msgs/TransformStamped`` per tracked person on ``/tf`` (tf2_msgs/TFMessage):
  parent = the image's optical frame (Poses3D.header.frame_id), child = ``<tf_frame_prefix><id>`` (default
  ``person_<id>``), translation = the root joint (Person3D.position, metres), rotation = identity (the frame has
  the optical frame's axes: x right, y down, z forward), stamp = the image stamp.

ROS4HRI / REP-155 (``publish_hri``), body id = ``<hri_body_id_prefix><id>`` (default ``b<id>``; a ROS name token
must not start with a digit):
  ``/humans/bodies/tracked``            hri_msgs/IdsList, the ids in the current image (every processed image)
  ``/humans/bodies/<body_id>/skeleton2d`` hri_msgs/Skeleton2D, 18 OpenPose-COCO keypoints in normalised image
                                        coordinates [0, 1]; c = detection score for a joint inside the image, 0 for
                                        joints outside it or missing from the output skeleton (coco_19 has all 18)
  ``/humans/bodies/<body_id>/roi``      hri_msgs/NormalizedRegionOfInterest2D, the detection box (normalised), c =
                                        detection score
  TF frame ``body_<body_id>``           like the person frame: root joint, optical-frame axes (the REP's body
                                        orientation, x forward / z up, is not estimated)

The message types are imported only when present (:func:`import_message`): a missing package gives one clear
warning in the node and that output stays off.
"""

from __future__ import annotations

import importlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

TF_TOPIC = '/tf'
HRI_TRACKED_TOPIC = '/humans/bodies/tracked'
HRI_BODY_TOPIC = '/humans/bodies/{body_id}/{name}'
HRI_BODY_FRAME = 'body_{body_id}'

# hri_msgs/Skeleton2D order (its constants NOSE = 0 ... RIGHT_EAR = 17) as metrabs_ros joint names.
SKELETON2D_JOINTS = ('nose', 'neck', 'rsho', 'relb', 'rwri', 'lsho', 'lelb', 'lwri', 'rhip', 'rkne', 'rank',
                     'lhip', 'lkne', 'lank', 'leye', 'reye', 'lear', 'rear')


def import_message(module: str, name: str) -> Tuple[Optional[type], str]:
    """``(message class, '')`` or ``(None, reason)`` when the package is not installed."""
    try:
        return getattr(importlib.import_module(module), name), ''
    except Exception as error:  # ImportError, or a half-installed package (missing typesupport library)
        return None, f'{type(error).__name__}: {error}'


def person_frame(prefix: str, person_id: int) -> str:
    return f'{prefix}{int(person_id)}'


def hri_body_id(prefix: str, person_id: int) -> str:
    return f'{prefix}{int(person_id)}'


def root_transforms(poses_msg, child_frames: Sequence[str]) -> List:
    """One TransformStamped per person of ``poses_msg``: parent = its frame_id, child = ``child_frames[i]``,
    translation = Person3D.position (metres), identity rotation; skips people with a non-finite root."""
    from geometry_msgs.msg import Transform, TransformStamped, Vector3
    transforms = []
    for person, child in zip(poses_msg.people, child_frames):
        p = person.position
        if not all(np.isfinite([p.x, p.y, p.z])):
            continue
        transform = TransformStamped(header=poses_msg.header, child_frame_id=child,
                                     transform=Transform(translation=Vector3(x=p.x, y=p.y, z=p.z)))
        transform.transform.rotation.w = 1.0
        transforms.append(transform)
    return transforms


def skeleton2d_indices(joint_names: Sequence[str]) -> List[Optional[int]]:
    """For each of the 18 Skeleton2D keypoints, its index in ``joint_names`` or None."""
    lowered = [str(n).lower() for n in joint_names]
    return [lowered.index(name) if name in lowered else None for name in SKELETON2D_JOINTS]


def skeleton2d_points(person, indices: Sequence[Optional[int]], image_wh: Tuple[int, int]):
    """``[(x, y, c)] * 18``: normalised coordinates clipped to [0, 1], c as described in the module docstring."""
    width, height = max(int(image_wh[0]), 1), max(int(image_wh[1]), 1)
    points = []
    for index in indices:
        if index is None or index >= len(person.joints_2d):
            points.append((0.0, 0.0, 0.0))
            continue
        keypoint = person.joints_2d[index]
        x, y = keypoint.x_px / width, keypoint.y_px / height
        if not (np.isfinite(x) and np.isfinite(y)):
            points.append((0.0, 0.0, 0.0))
            continue
        confidence = float(person.score) if keypoint.in_image else 0.0
        points.append((float(np.clip(x, 0.0, 1.0)), float(np.clip(y, 0.0, 1.0)), confidence))
    return points


def normalised_roi(person, image_wh: Tuple[int, int]) -> Tuple[float, float, float, float, float]:
    """``(xmin, ymin, xmax, ymax, c)`` of the detection box, normalised and clipped to [0, 1]."""
    width, height = max(int(image_wh[0]), 1), max(int(image_wh[1]), 1)
    x0, y0 = person.box_x_px / width, person.box_y_px / height
    x1, y1 = (person.box_x_px + person.box_width_px) / width, (person.box_y_px + person.box_height_px) / height
    clip = lambda v: float(np.clip(v, 0.0, 1.0))  # noqa: E731
    return clip(x0), clip(y0), clip(x1), clip(y1), float(person.score)


class HriBodies:
    """The ROS4HRI body topics of one node: creates a body's publishers when its id appears, destroys them when the
    id has been gone for ``forget_after_s`` (so a short miss does not re-create them)."""

    def __init__(self, node, id_prefix: str, qos, forget_after_s: float = 1.0):
        self.node = node
        self.id_prefix = id_prefix
        self.qos = qos
        self.forget_after_s = float(forget_after_s)
        self.IdsList, _ = import_message('hri_msgs.msg', 'IdsList')
        self.Skeleton2D, _ = import_message('hri_msgs.msg', 'Skeleton2D')
        self.Point, _ = import_message('hri_msgs.msg', 'NormalizedPointOfInterest2D')
        self.Roi, _ = import_message('hri_msgs.msg', 'NormalizedRegionOfInterest2D')
        self.tracked_publisher = node.create_publisher(self.IdsList, HRI_TRACKED_TOPIC, qos)
        self._bodies: Dict[str, Tuple[object, object]] = {}
        self._last_seen_s: Dict[str, float] = {}

    @staticmethod
    def missing_reason() -> str:
        """'' when hri_msgs (with the four message types used) imports, else why not."""
        for name in ('IdsList', 'Skeleton2D', 'NormalizedPointOfInterest2D', 'NormalizedRegionOfInterest2D'):
            cls, reason = import_message('hri_msgs.msg', name)
            if cls is None:
                return reason
        return ''

    def body_ids(self, poses_msg) -> List[str]:
        return [hri_body_id(self.id_prefix, person.id) for person in poses_msg.people]

    def publish(self, poses_msg, now_s: float) -> None:
        header = poses_msg.header
        image_wh = (poses_msg.image_width_px, poses_msg.image_height_px)
        indices = skeleton2d_indices(poses_msg.joint_names)
        ids = self.body_ids(poses_msg)
        for body_id, person in zip(ids, poses_msg.people):
            self._last_seen_s[body_id] = now_s
            if body_id not in self._bodies:
                self._bodies[body_id] = (
                    self.node.create_publisher(self.Skeleton2D, HRI_BODY_TOPIC.format(body_id=body_id,
                                                                                      name='skeleton2d'), self.qos),
                    self.node.create_publisher(self.Roi, HRI_BODY_TOPIC.format(body_id=body_id, name='roi'),
                                               self.qos))
            skeleton_publisher, roi_publisher = self._bodies[body_id]
            skeleton = self.Skeleton2D(header=header)
            skeleton.skeleton = [self.Point(x=x, y=y, c=c) for x, y, c in skeleton2d_points(person, indices,
                                                                                            image_wh)]
            skeleton_publisher.publish(skeleton)
            xmin, ymin, xmax, ymax, c = normalised_roi(person, image_wh)
            roi_publisher.publish(self.Roi(header=header, xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax, c=c))
        self.tracked_publisher.publish(self.IdsList(header=header, ids=ids))
        for body_id in [b for b, seen in self._last_seen_s.items() if now_s - seen > self.forget_after_s]:
            self._forget(body_id)

    def _forget(self, body_id: str) -> None:
        self._last_seen_s.pop(body_id, None)
        for publisher in self._bodies.pop(body_id, ()):
            self.node.destroy_publisher(publisher)

    def close(self) -> None:
        for body_id in list(self._bodies):
            self._forget(body_id)
        self.node.destroy_publisher(self.tracked_publisher)
