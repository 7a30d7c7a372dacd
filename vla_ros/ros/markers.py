"""The predicted action chunk as visualization_msgs markers (RViz / Foxglove): one line strip of EE positions per
arm in the robot's base frame, plus a sphere at the step executing now."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from geometry_msgs.msg import Point
from visualization_msgs.msg import Marker, MarkerArray

from vla_ros.ros.messages import sec_to_stamp

# one colour per arm (RGBA), cycled
_COLOURS = ((0.1, 0.6, 1.0, 0.9), (1.0, 0.5, 0.1, 0.9), (0.2, 0.8, 0.3, 0.9), (0.8, 0.2, 0.8, 0.9))


def chunk_markers(paths: Mapping[str, np.ndarray], frame_id: str, t: float, current: int = 0,
                  namespace: str = "vla_ros/chunk") -> MarkerArray:
    """`paths`: {arm: (T, 3) EE positions (m) in `frame_id`}; `current`: index of the step executing now."""
    markers = []
    for k, (arm, points) in enumerate(paths.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        line = _marker(Marker.LINE_STRIP, f"{namespace}/{arm}", 2 * k, frame_id, t, colour, 0.005)
        line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in np.asarray(points)]
        now = _marker(Marker.SPHERE, f"{namespace}/{arm}", 2 * k + 1, frame_id, t, colour, 0.02)
        p = np.asarray(points)[min(max(current, 0), len(points) - 1)]
        now.pose.position = Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
        now.pose.orientation.w = 1.0
        markers += [line, now]
    return MarkerArray(markers=markers)


def _marker(kind: int, ns: str, marker_id: int, frame_id: str, t: float, colour, size: float) -> Marker:
    m = Marker(type=kind, ns=ns, id=marker_id, action=Marker.ADD)
    m.header.frame_id = frame_id
    sec_to_stamp(t, m.header.stamp)
    m.scale.x = m.scale.y = m.scale.z = size
    m.color.r, m.color.g, m.color.b, m.color.a = colour
    m.pose.orientation.w = 1.0
    return m
