"""PoseResult -> metrabs_ros/msg/Poses3D (millimetres -> METRES) and back to numpy for consumers.

Poses3D.header = the image's header (stamp + optical frame_id). Person ids are tracking ids when given, else the
index. The root ``position`` is the pelvis joint when the skeleton has one, else the mean of the finite joints.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

ROOT_JOINT_NAMES = ('pelv', 'pelvis', 'spinebase', 'mid_hip', 'midhip')


def root_joint_index(joint_names: Sequence[str]) -> Optional[int]:
    """Index of the pelvis-like joint in ``joint_names``, or None."""
    lowered = [str(n).lower() for n in joint_names]
    for name in ROOT_JOINT_NAMES:
        if name in lowered:
            return lowered.index(name)
    return None


def joints_in_image(points_px: np.ndarray, image_hw: Sequence[int]) -> np.ndarray:
    """bool ``[..., J]``: the pixel lies inside the image ``[-0.5, W-0.5) x [-0.5, H-0.5)`` (pixel centres at
    integers)."""
    p = np.asarray(points_px, np.float64)
    height, width = int(image_hw[0]), int(image_hw[1])
    with np.errstate(invalid='ignore'):
        return ((p[..., 0] >= -0.5) & (p[..., 0] < width - 0.5) &
                (p[..., 1] >= -0.5) & (p[..., 1] < height - 0.5))


def result_to_poses3d_msg(result, header, image_hw: Sequence[int], person_ids: Optional[Sequence[int]] = None,
                          timing_s: Optional[Dict[str, float]] = None):
    """Build a ``metrabs_ros/Poses3D`` from a :class:`metrabs_ros.estimator.PoseResult`.

    Args:
      header: ``std_msgs/Header`` of the input image (copied: stamp and frame_id).
      image_hw: (height, width) of the processed image in pixels.
      person_ids: one id per person; default the index.
      timing_s: optional ``queue_time_s``, ``inference_time_s``, ``latency_s`` (seconds).
    """
    from geometry_msgs.msg import Point
    from std_msgs.msg import Header

    from metrabs_ros.msg import Keypoint2D, Person3D, Poses3D

    poses_m = np.asarray(result.poses3d_mm, np.float64) / 1000.0
    poses_px = np.asarray(result.poses2d_px, np.float64)
    boxes = np.asarray(result.boxes, np.float64).reshape(-1, 5)
    num_people, num_joints = poses_m.shape[:2] if poses_m.ndim == 3 else (0, len(result.joint_names))
    ids = list(range(num_people)) if person_ids is None else [int(i) for i in person_ids]
    if len(ids) != num_people:
        raise ValueError(f'{len(ids)} person ids for {num_people} people')
    root = root_joint_index(result.joint_names)
    finite = np.all(np.isfinite(poses_m), axis=-1) if num_people else np.zeros((0, num_joints), bool)
    with np.errstate(invalid='ignore'):
        mean_m = np.nansum(np.where(finite[..., None], poses_m, 0), axis=1) / np.maximum(
            finite.sum(axis=1, keepdims=True), 1) if num_people else np.zeros((0, 3))
    positions_m = poses_m[:, root] if root is not None else mean_m
    in_image = joints_in_image(poses_px, image_hw) if num_people else np.zeros((0, num_joints), bool)
    uncertainty_m = (np.asarray(result.uncertainty, np.float64) / 1000.0
                     if getattr(result, 'uncertainty', None) is not None else None)

    people = []
    for p in range(num_people):
        person = Person3D()
        person.id = ids[p]
        x, y, w, h, score = boxes[p].tolist()
        person.score = float(score)
        person.box_x_px, person.box_y_px, person.box_width_px, person.box_height_px = x, y, w, h
        px, py, pz = positions_m[p].tolist()
        person.position = Point(x=px, y=py, z=pz)
        person.joints = [Point(x=a, y=b, z=c) for a, b, c in poses_m[p].tolist()]
        person.joints_2d = [Keypoint2D(x_px=u, y_px=v, in_image=bool(inside))
                            for (u, v), inside in zip(poses_px[p].tolist(), in_image[p].tolist())]
        if uncertainty_m is not None:
            person.joint_uncertainty_m = uncertainty_m[p].astype(np.float32).tolist()
        people.append(person)

    msg = Poses3D()
    msg.header = Header(stamp=header.stamp, frame_id=header.frame_id)
    msg.skeleton = str(result.skeleton)
    msg.joint_names = [str(n) for n in result.joint_names]
    msg.edges = np.asarray(result.joint_edges, np.int64).reshape(-1).astype(np.uint16).tolist()
    msg.image_height_px, msg.image_width_px = int(image_hw[0]), int(image_hw[1])
    msg.people = people
    for key, value in (timing_s or {}).items():
        setattr(msg, key, float(value))
    return msg


def poses3d_msg_to_arrays(msg) -> Dict[str, np.ndarray]:
    """Numpy view of a Poses3D message for consumers/tests: ``joints_m [P, J, 3]``, ``joints_2d_px [P, J, 2]``,
    ``in_image [P, J]``, ``boxes_xywh_px [P, 4]``, ``scores [P]``, ``ids [P]``, ``positions_m [P, 3]``,
    ``edges [E, 2]``."""
    num_joints = len(msg.joint_names)
    people = list(msg.people)
    return {
        'joints_m': np.array([[(j.x, j.y, j.z) for j in p.joints] for p in people],
                             np.float64).reshape(len(people), num_joints, 3),
        'joints_2d_px': np.array([[(k.x_px, k.y_px) for k in p.joints_2d] for p in people],
                                 np.float64).reshape(len(people), num_joints, 2),
        'in_image': np.array([[k.in_image for k in p.joints_2d] for p in people], bool).reshape(
            len(people), num_joints),
        'boxes_xywh_px': np.array([(p.box_x_px, p.box_y_px, p.box_width_px, p.box_height_px) for p in people],
                                  np.float64).reshape(-1, 4),
        'scores': np.array([p.score for p in people], np.float64),
        'ids': np.array([p.id for p in people], np.int64),
        'positions_m': np.array([(p.position.x, p.position.y, p.position.z) for p in people],
                                np.float64).reshape(-1, 3),
        'edges': np.asarray(msg.edges, np.int64).reshape(-1, 2),
    }
