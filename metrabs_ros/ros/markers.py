"""PoseResult -> visualization_msgs/MarkerArray for RViz (metres, in the image's optical frame).

Per person (namespace ``person_<id>``): marker id 0 = SPHERE_LIST of the joints, id 1 = LINE_LIST of the bones,
coloured by the person id from a fixed palette (the same as the debug image). Marker ids are stable per person id,
so RViz updates markers in place; people that disappeared since the previous frame get DELETE markers, and
:func:`delete_all_marker_array` (DELETEALL) clears everything on start-up/reset. Joints with NaN/inf coordinates
are left out (RViz rejects non-finite points).
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from metrabs_ros.visualization import PALETTE_RGB

JOINTS_MARKER_ID = 0
BONES_MARKER_ID = 1


def person_namespace(person_id: int) -> str:
    return f'person_{int(person_id)}'


def person_colour_rgba(person_id: int, alpha: float = 1.0) -> Tuple[float, float, float, float]:
    """RGBA in 0..1 for a person id (fixed palette, cycles)."""
    r, g, b = (PALETTE_RGB[int(person_id) % len(PALETTE_RGB)] / 255.0).tolist()
    return r, g, b, float(alpha)


def _duration(seconds: float):
    from builtin_interfaces.msg import Duration
    seconds = max(float(seconds), 0.0)
    whole = int(seconds)
    return Duration(sec=whole, nanosec=int(round((seconds - whole) * 1e9)) % 1_000_000_000)


def _copy_header(header):
    from std_msgs.msg import Header
    return Header(stamp=header.stamp, frame_id=header.frame_id)


def _points(xyz_m: np.ndarray):
    from geometry_msgs.msg import Point
    return [Point(x=x, y=y, z=z) for x, y, z in np.asarray(xyz_m, np.float64).tolist()]


def build_marker_array(result, header, person_ids: Optional[Sequence[int]] = None,
                       previous_ids: Iterable[int] = (), lifetime_s: float = 0.5,
                       joint_diameter_m: float = 0.05, bone_width_m: float = 0.02, alpha: float = 1.0):
    """Markers of all people in ``result`` (a :class:`metrabs_ros.estimator.PoseResult`, millimetres).

    Args:
      header: ``std_msgs/Header`` of the image (stamp and optical frame_id are copied).
      person_ids: one id per person (tracking ids); default: the index.
      previous_ids: ids published in the previous call: those missing now get DELETE markers.
      lifetime_s: marker lifetime (0 = until replaced or deleted).
    Returns:
      ``(MarkerArray, ids)`` where ``ids`` (a set) is to be passed as ``previous_ids`` next time.
    """
    from visualization_msgs.msg import Marker, MarkerArray
    poses_m = np.asarray(result.poses3d_mm, np.float64) / 1000.0
    num_people = len(poses_m)
    ids = list(range(num_people)) if person_ids is None else [int(i) for i in person_ids]
    if len(ids) != num_people:
        raise ValueError(f'{len(ids)} person ids for {num_people} people')
    edges = np.asarray(result.joint_edges, np.int64).reshape(-1, 2)
    lifetime = _duration(lifetime_s)
    markers = []
    for person_id, pose_m in zip(ids, poses_m):
        finite = np.all(np.isfinite(pose_m), axis=1)
        r, g, b, a = person_colour_rgba(person_id, alpha)
        joints = Marker(header=_copy_header(header), ns=person_namespace(person_id), id=JOINTS_MARKER_ID,
                        type=Marker.SPHERE_LIST, action=Marker.ADD, lifetime=lifetime)
        joints.pose.orientation.w = 1.0
        joints.scale.x = joints.scale.y = joints.scale.z = float(joint_diameter_m)
        joints.color.r, joints.color.g, joints.color.b, joints.color.a = r, g, b, a
        joints.points = _points(pose_m[finite])
        bones = Marker(header=_copy_header(header), ns=person_namespace(person_id), id=BONES_MARKER_ID,
                       type=Marker.LINE_LIST, action=Marker.ADD, lifetime=lifetime)
        bones.pose.orientation.w = 1.0
        bones.scale.x = float(bone_width_m)
        bones.color.r, bones.color.g, bones.color.b, bones.color.a = r, g, b, a
        good_edges = edges[finite[edges[:, 0]] & finite[edges[:, 1]]] if len(edges) else edges
        bones.points = _points(pose_m[good_edges.reshape(-1)])
        markers += [joints, bones]
    current = set(ids)
    for person_id in sorted(set(int(i) for i in previous_ids) - current):
        for marker_id in (JOINTS_MARKER_ID, BONES_MARKER_ID):
            markers.append(Marker(header=_copy_header(header), ns=person_namespace(person_id), id=marker_id,
                                  action=Marker.DELETE))
    return MarkerArray(markers=markers), current


def delete_all_marker_array(header):
    """A MarkerArray with one DELETEALL marker (clears every marker of this publisher in RViz)."""
    from visualization_msgs.msg import Marker, MarkerArray
    return MarkerArray(markers=[Marker(header=_copy_header(header), action=Marker.DELETEALL)])
