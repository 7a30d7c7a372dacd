"""How a position-controlled arm's joints follow their set-points: lag, speed and acceleration limits.

The model is the one a position-servoed joint (a ros2_control JTC on a Franka / UR, a Dynamixel in position mode)
shows from the outside: every joint chases its latest set-point with a first-order lag of `time_constant`, its
speed capped by the joint's velocity limit, its speed changes capped by the acceleration limit, and braking curves
that let an acceleration-limited joint stop at the set-point instead of overshooting it, and never run into its
position limits. The servo runs on a fixed tick (`substep`, 1 kHz like the drivers' own loops), so the motion is
the same however often `step` is called. Time is injected (`now`, seconds); nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vla_ros.core.errors import VlaRosError


class JointCommandError(VlaRosError):
    """A joint command the simulated driver rejects (non-finite value, wrong length)."""


@dataclass(frozen=True)
class TrackerConfig:
    time_constant: float = 0.08  # s, first-order lag toward the set-point (position-servoed arms: 50-100 ms)
    delay: float = 0.0  # s, transport delay between a command and the servo seeing it
    position_noise: float = 0.0  # standard deviation of the measured position (rad or m), not of the true state
    velocity_noise: float = 0.0  # standard deviation of the measured velocity
    seed: int = 0  # measurement noise generator seed
    substep: float = 0.001  # s, servo tick

    def __post_init__(self):
        for field in ("time_constant", "substep"):
            if not getattr(self, field) > 0:
                raise ValueError(f"TrackerConfig.{field} must be positive, got {getattr(self, field)!r}")
        for field in ("delay", "position_noise", "velocity_noise"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"TrackerConfig.{field} must be >= 0, got {getattr(self, field)!r}")


class JointTracker:
    """The robot's joint-level response to position commands; all joints of `robot` in `robot.joint_names` order.

    `command(q_target, now)` sets new set-points (all joints, or the joints at `indices`), `step(now)` runs the
    servo up to `now` and returns the measured (q, qd) of its last tick. With no new command the joints settle on,
    and hold, the last set-point. Set-points are clipped into the position limits; positions, speeds and
    accelerations never exceed the robot's limits. Not thread-safe: one caller at a time.
    """

    def __init__(self, robot, config: TrackerConfig | None = None, q0: np.ndarray | None = None):
        self.robot = robot
        self.config = config or TrackerConfig()
        limits = robot.limits
        self._lower, self._upper = limits.lower.copy(), limits.upper.copy()
        self._max_velocity, self._max_acceleration = limits.velocity.copy(), limits.acceleration.copy()
        h = self.config.substep
        self._speed_change = self._max_acceleration * h  # the most a tick can change a joint's speed
        self._stop_scale = 2.0 / (self._max_acceleration * h * h)
        self._lag_gain = 1.0 / self.config.time_constant
        q0 = robot.home if q0 is None else q0
        self._q = np.clip(self._checked(q0, np.arange(robot.nq), "q0"), self._lower, self._upper)
        self._qd = np.zeros(robot.nq)
        self._distances = np.empty((3, robot.nq))  # tick scratch: to the set-point, to the lower and upper limits
        self._target = self._q.copy()
        self._pending: deque[tuple[float, np.ndarray, np.ndarray]] = deque()  # (due time, indices, values)
        self._origin: float | None = None  # the servo's ticks are at origin + k * substep
        self._ticks = 0
        self._rng = np.random.default_rng(self.config.seed)

    @property
    def time(self) -> float | None:
        """Time of the servo's last tick (None before the first command or step)."""
        return None if self._origin is None else self._origin + self._ticks * self.config.substep

    @property
    def target(self) -> np.ndarray:
        """The set-points the joints are chasing (commands not yet due are not included)."""
        return self._target.copy()

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """The true (noise-free) joint positions and velocities at the last tick."""
        return self._q.copy(), self._qd.copy()

    def _checked(self, values, indices: np.ndarray, what: str) -> np.ndarray:
        values = np.asarray(values, dtype=float).reshape(-1)
        if values.shape != indices.shape:
            raise JointCommandError(
                f"robot {self.robot.name}: {what} has {values.size} values, expected {indices.size}")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            joint = self.robot.joint_names[indices[bad[0]]]
            raise JointCommandError(f"robot {self.robot.name}: {what} for joint {joint!r} is {values[bad[0]]}, "
                                    "not finite")
        return values

    def command(self, q_target, now: float, indices=None) -> None:
        """New set-points at time `now`: a full (nq,) vector, or one value per index in `indices` (other joints
        keep their set-points). The servo sees them `config.delay` later; out-of-limit values are clipped."""
        indices = np.arange(self.robot.nq) if indices is None else np.asarray(indices, dtype=int).reshape(-1)
        values = self._checked(q_target, indices, "command")
        if self._origin is None:
            self._origin = float(now)
        self._pending.append((float(now) + self.config.delay, indices.copy(), values.copy()))

    def step(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Run the servo's ticks up to `now`; return the measured (q, qd) of the last one. A `now` earlier than
        the last tick (a clock reset) restarts the tick grid there without moving the joints."""
        now = float(now)
        if self._origin is None or now < self.time:
            self._origin, self._ticks = now, 0
        ticks = int(np.floor((now - self._origin) / self.config.substep + 1e-9))
        while self._ticks < ticks:
            if self._pending:
                self._apply_due()
            self._tick()
            self._ticks += 1
        self._apply_due()
        return self._measured()

    def _apply_due(self) -> None:
        """Set-points due by the current tick take effect from it."""
        now = self.time + 1e-12
        while self._pending and self._pending[0][0] <= now:
            _, indices, values = self._pending.popleft()
            self._target[indices] = np.clip(values, self._lower[indices], self._upper[indices])

    def _tick(self) -> None:
        """One servo tick. The speed is capped by the lag, the velocity limit and three braking curves (to the
        set-point and to both position limits): `stop_speed(d)` is the highest speed from which full deceleration
        still stops the joint within distance d. It is the discrete form of v = sqrt(2 a d) (ticks of a * h less
        speed cover a * h^2 * n (n + 1) / 2 before stopping), exact for this integration, so a braking joint never
        overshoots; the continuous formula drifts above it tick by tick and ends in an overshoot."""
        q, distances = self._q, self._distances
        np.subtract(self._target, q, out=distances[0])
        error_sign = np.sign(distances[0])
        np.abs(distances[0], out=distances[0])
        np.subtract(q, self._lower, out=distances[1])
        np.subtract(self._upper, q, out=distances[2])
        np.maximum(distances, 0.0, out=distances)
        stop_speed = self._speed_change * (np.sqrt(0.25 + distances * self._stop_scale) - 0.5)
        speed = np.minimum(np.minimum(distances[0] * self._lag_gain, self._max_velocity), stop_speed[0])
        # (np.minimum / np.maximum pairs rather than np.clip: several times faster on joint-sized arrays.)
        wanted = np.maximum(np.minimum(error_sign * speed, stop_speed[2]), -stop_speed[1])
        self._qd += np.maximum(np.minimum(wanted - self._qd, self._speed_change), -self._speed_change)
        # The braking curves keep q inside the limits; this only removes floating-point residue.
        self._q = np.maximum(np.minimum(q + self._qd * self.config.substep, self._upper), self._lower)

    def _measured(self) -> tuple[np.ndarray, np.ndarray]:
        q, qd = self._q.copy(), self._qd.copy()
        if self.config.position_noise > 0:
            # Clipped so a joint resting on its limit is never reported outside it (the safety layer treats that
            # as a fault, and a noise model should not manufacture faults).
            q = np.clip(q + self._rng.normal(0.0, self.config.position_noise, q.shape), self._lower, self._upper)
        if self.config.velocity_noise > 0:
            qd += self._rng.normal(0.0, self.config.velocity_noise, qd.shape)
        return q, qd
