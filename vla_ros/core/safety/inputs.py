"""Reading the filter's inputs: times, and joint vectors by name. Whatever arrives (from a topic, a bag, a caller),
the result is either a clean value or one `input` Intervention naming the problem: never an exception.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from vla_ros.core.robot import RobotModel
from vla_ros.core.safety.report import Intervention

_NAN = math.nan
_REAL_KINDS = "iuf"  # numpy dtype kinds accepted as joint values (not bool, complex, text, objects)


def read_time(value: object, what: str) -> tuple[float | None, Intervention | None]:
    """`value` as a finite float of seconds, or (None, the refusal)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None, Intervention("input", None, None, _NAN, _NAN,
                                  f"{what} refused: time {value!r} is not a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        return None, Intervention("input", None, None, seconds, _NAN, f"{what} refused: time {value!r} is not finite")
    return seconds, None


def _real_values(values: object) -> tuple[np.ndarray | None, str | None]:
    """A flat float64 array of `values`, or (None, what is wrong)."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError, OverflowError):
        return None, "positions are not numbers"
    if array.dtype.kind == "O":  # Python ints beyond float range, None, mixed types
        try:
            array = np.array([float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else _NAN
                              for x in array.ravel()]).reshape(array.shape)
        except OverflowError:
            return None, "a position is out of the floating-point range"
        if np.isnan(array).any():
            return None, "positions are not numbers"
    elif array.dtype.kind == "c":
        return None, "positions are complex numbers"
    elif array.dtype.kind not in _REAL_KINDS:
        return None, "positions are not numbers"
    if array.ndim != 1:
        return None, f"positions must be one flat list, got shape {array.shape}"
    return array.astype(float, copy=False), None


class JointInput:
    """Maps joint vectors to the robot's joints by name (never by position)."""

    def __init__(self, robot: RobotModel, arm_of: list[str | None]):
        self.robot, self.arm_of = robot, arm_of
        self.index = {name: i for i, name in enumerate(robot.joint_names)}
        self.every = list(range(robot.nq))
        self.all = np.arange(robot.nq)  # the parsed index of a full name list in robot.joint_names order
        self._names_seen: dict[tuple, tuple] = {}  # parsed joint-name lists (nodes resend the same names)

    def parse(self, names, positions, what: str, ignore_unknown: bool = False):
        """((index array, values array, values list), None) or (None, an "input" Intervention naming the first
        problem). `ignore_unknown`: names the robot does not command are skipped (JointState carries mimic joints)."""
        if isinstance(names, (str, bytes)):
            return self.refused(what, "joint names must be a list of strings, got one string")
        try:
            names = tuple(names)
        except TypeError:
            return self.refused(what, f"joint names must be a list of strings, got {type(names).__name__}")
        values, problem = _real_values(positions)
        if problem is not None:
            return self.refused(what, problem)
        if len(names) != len(values):
            return self.refused(what, f"{len(names)} joint names but {len(values)} positions", len(values), len(names))
        key = (names, ignore_unknown)
        try:
            parsed = self._names_seen.get(key)
        except TypeError:  # an unhashable "name"
            return self.refused(what, "joint names must be strings")
        if parsed is None:
            parsed = self._parse_names(names, ignore_unknown)
            if len(self._names_seen) >= 64:
                self._names_seen.clear()
            self._names_seen[key] = parsed
        index, keep, problem, joint = parsed
        if problem is not None:
            return self.refused(what, problem, joint=joint)
        if keep is not None:
            values = values[keep]
        listed = values.tolist()
        if not all(map(math.isfinite, listed)):  # per value in floats: a few times cheaper than numpy on a handful
            k = int(np.flatnonzero(~np.isfinite(values))[0])
            name = self.robot.joint_names[index[k]]
            return self.refused(what, f"{name} = {values[k]} is not finite", values[k], joint=name)
        return (index, values, listed), None

    def refused(self, what: str, detail: str, requested: float = _NAN, allowed: float = _NAN,
                joint: str | None = None):
        """(None, the "input" Intervention refusing `what`)."""
        arm = self.arm_of[self.index[joint]] if joint in self.index else None
        return None, Intervention("input", arm, joint, requested, allowed, f"{what} refused: {detail}")

    def _parse_names(self, names: tuple, ignore_unknown: bool):
        """(index array, positions to keep or None for all, problem or None, joint the problem names)."""
        seen: set[str] = set()
        index, keep = [], []
        for k, name in enumerate(names):
            if not isinstance(name, str):
                return None, None, f"joint name {name!r} is not a string", None
            if name in seen:
                return None, None, f"joint {name!r} named twice", name
            seen.add(name)
            i = self.index.get(name)
            if i is None:
                if ignore_unknown:
                    continue
                return None, None, f"unknown joint {name!r} (robot {self.robot.name})", None
            index.append(i)
            keep.append(k)
        if not index:
            return None, None, f"no joint of robot {self.robot.name} named", None
        index = self.all if index == self.every else np.array(index)
        return index, (None if len(keep) == len(names) else np.array(keep)), None, None


def out_of_range(index: np.ndarray, values: Sequence[float], lower: np.ndarray, upper: np.ndarray,
                 names: tuple[str, ...]) -> tuple[int, str] | None:
    """The first value outside [lower, upper] of its joint: (its position in `values`, a description), or None."""
    values = np.asarray(values)
    bad = np.flatnonzero((values < lower[index]) | (values > upper[index]))
    if not bad.size:
        return None
    k = int(bad[0])
    i = int(index[k])
    return k, (f"{names[i]} = {values[k]:.6g} is outside its range [{lower[i]:.4f}, {upper[i]:.4f}] (URDF limits "
               f"widened by the measurement tolerance)")
