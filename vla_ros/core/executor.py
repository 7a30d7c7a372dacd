"""Action-chunk executor: turns policy chunks into one command per control tick.

Timeline. A chunk answers one observation; action i is meant for `chunk.stamp + i * chunk.dt`, where the stamp is
the observation's capture time. The executor samples that timeline at each tick, so actions that fell into the past
while the policy was thinking are skipped, never replayed (the "stepping back" users report). The timeline runs on
motion time: wall time during which the executor was executing. While it holds (start-up, a synchronous wait, an
underflow) the robot stands still and motion time stands still with it, so a chunk whose observation was taken
before or during a hold resumes from the slot matching where the robot stopped, not from a slot that assumes the
robot kept moving. Without holds, motion time is wall time minus a constant: plain placement by capture stamp.

Modes (`ExecutorConfig.mode`):
  sync      receding horizon: execute `execute_steps` chunk steps, then hold and request the next chunk (the robot
            waits for the policy, as in openpi's ActionChunkBroker).
  ensemble  ACT temporal ensembling: request every tick; the command is the weighted mean over every chunk that
            covers `now`, weight exp(-ensemble_coeff * i) with i = 0 the OLDEST chunk (ACT / LeRobot convention:
            a positive coefficient favours older predictions, a negative one newer ones).
  async     request the next chunk while fewer than queue_threshold * horizon steps are left, or fewer than the
            worst recent latency + blend needs (adapt_threshold); on arrival the past actions are dropped and the
            hand-over is blended. "crossfade" ramps old -> new along a minimum-peak-jerk S-curve whose length
            (blend_steps .. max_blend_steps) is chosen so that absorbing the chunks' measured disagreement adds at
            most blend_jerk_budget x the chunks' own jerk; ramps may outlast the old chunk (its difference to the new
            one is extrapolated) and overlapping ramps telescope. "prefix" (real-time chunking) sends the actions
            that will execute during the expected latency to a backend that `supports_prefix`, keeps executing them
            (they are committed) and switches to the new chunk, without a blend, where the prefix ends; a chunk
            arriving after its prefix ran out is crossfaded instead.

Sampling at `now` (documented choices):
  absolute columns (joint_pos, ee_pose, every gripper column) are interpolated linearly between the two slots
  around `now` (angles the short way round, quaternions by normalised lerp); after the last slot the last action
  holds until the chunk ends at `stamp + T * dt`.
  rate columns (the motion columns of ee_delta / joint_delta / joint_vel) are per-slot quantities: a delta is the
  motion over its slot, so the command for the tick is the motion over [now, now + control_dt), i.e. the slot
  deltas weighted by how much of each slot the tick covers (summing all ticks reproduces the chunk's total motion
  exactly, whatever control_dt is); a velocity command is the mean velocity over that interval. Rotation deltas
  are summed as small-angle vectors (quaternion deltas via rotation vectors): first order in the per-step angle.

Hand-over jerk: jerk is the third difference of the executed motion (holds included, the target repeats) over
four consecutive ticks, |c[n] - 3c[n-1] + 3c[n-2] - c[n-3]| / control_dt**3 on the motion columns (gripper
excluded; rate commands are integrated to positions first). A window is "boundary" unless all four ticks came
from one and the same chunk; windows before the first command are skipped. The in-chunk reference is the median
over the last accepted chunks of each chunk's own p95 jerk (its actions, at its dt). The boundary jerk ratio is
the largest boundary jerk divided by that reference.

`ChunkExecutor` is single-threaded: call `tick`, `submit` and friends from the control loop. Inference runs in a
`vla_ros.core.policy_worker.PolicyWorker`; its results are handed to `submit` from the control loop.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, deque
from dataclasses import asdict, dataclass, fields
from itertools import compress
from typing import NamedTuple

import numpy as np

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.rotations import from_matrix, to_matrix
from vla_ros.core.types import ActionChunk, ActionSpace, BadChunkError, PolicyMetadata, validate_chunk

MODES = ("sync", "ensemble", "async")
BLENDS = ("crossfade", "prefix")
RATE_KINDS = ("ee_delta", "joint_delta", "joint_vel")
QUAT_NORM_TOLERANCE = 0.1  # |‖q‖ - 1| above this is a broken quaternion, below it is renormalised
_REFERENCE_CHUNKS = 64  # chunks over which the in-chunk jerk reference is taken
_SLOPE_TICKS = 3  # ticks over which a crossfade measures the slope of the chunks' difference
_EPS = 1e-9  # seconds: tick times are sums of floats; a slot edge within this counts as reached


@dataclass(frozen=True)
class ExecutorConfig:
    """How chunks become commands. Times in seconds; `*_steps` in chunk steps (1 / policy rate_hz)."""

    mode: str = "async"
    control_dt: float = 0.02
    execute_steps: int | None = None  # sync: chunk steps executed before re-inferring (None: the whole horizon)
    ensemble_coeff: float = 0.01  # ensemble: weight exp(-coeff * i), i = 0 the oldest chunk (ACT uses 0.01)
    queue_threshold: float = 0.5  # async: request when fewer than threshold * horizon steps are left (LeRobot 0.5)
    adapt_threshold: bool = True  # async: also request early enough to cover the worst recent latency + blend
    blend_steps: int = 10  # async crossfade: shortest old -> new ramp
    # crossfade: lengthen the ramp until it adds at most this x the chunks' own p95 jerk. Half, because ramps
    # overlap (the next chunk usually arrives before the last ramp ends): hand-overs then stay within ~2x.
    blend_jerk_budget: float = 0.5
    max_blend_steps: int | None = None  # crossfade: longest ramp (None: the policy horizon)
    blend: str = "crossfade"  # async hand-over: crossfade | prefix (needs a policy that supports_prefix)
    max_chunk_age: float = 1.0  # reject a chunk whose observation is older than this when it arrives
    hold_on_underflow: bool = True  # while nothing covers a tick: publish the last target (True) or nothing
    latency_window: int = 20  # arrivals over which the worst latency is taken (RTC: the worst latency seen)

    def __post_init__(self):
        def bad(name: str, problem: str) -> ConfigError:
            return ConfigError("executor config", name, problem)

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        def whole(value, minimum: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

        if self.mode not in MODES:
            raise bad("mode", f"expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.blend not in BLENDS:
            raise bad("blend", f"expected one of {', '.join(BLENDS)}, got {self.blend!r}")
        for name in ("control_dt", "max_chunk_age"):
            if not (number(getattr(self, name)) and getattr(self, name) > 0):
                raise bad(name, f"expected a positive number of seconds, got {getattr(self, name)!r}")
        if not number(self.ensemble_coeff):
            raise bad("ensemble_coeff", f"expected a finite number, got {self.ensemble_coeff!r}")
        if not (number(self.blend_jerk_budget) and self.blend_jerk_budget >= 0):
            raise bad("blend_jerk_budget", f"expected a number >= 0 (0: fixed ramps), got {self.blend_jerk_budget!r}")
        if not (number(self.queue_threshold) and 0 < self.queue_threshold <= 1):
            raise bad("queue_threshold", f"expected a fraction of the horizon in (0, 1], got {self.queue_threshold!r}")
        for name, minimum in (("blend_steps", 0), ("latency_window", 1)):
            if not whole(getattr(self, name), minimum):
                raise bad(name, f"expected a whole number >= {minimum}, got {getattr(self, name)!r}")
        for name in ("execute_steps", "max_blend_steps"):
            if getattr(self, name) is not None and not whole(getattr(self, name), 1):
                raise bad(name, f"expected a whole number >= 1 or null, got {getattr(self, name)!r}")
        if self.max_blend_steps is not None and self.max_blend_steps < self.blend_steps:
            raise bad("max_blend_steps", f"{self.max_blend_steps} is shorter than blend_steps {self.blend_steps}")
        for name in ("adapt_threshold", "hold_on_underflow"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, f"expected true or false, got {getattr(self, name)!r}")

    def check_against(self, metadata: PolicyMetadata) -> None:
        """Raise ConfigError if these settings cannot run `metadata`'s policy."""
        if self.execute_steps is not None and self.execute_steps > metadata.horizon:
            raise ConfigError("executor config", "execute_steps",
                              f"{self.execute_steps} exceeds policy {metadata.name}'s horizon {metadata.horizon}")
        if self.mode == "async" and self.blend == "prefix" and not metadata.supports_prefix:
            raise ConfigError("executor config", "blend", f"'prefix' needs a policy that conditions on an action "
                                                          f"prefix; {metadata.name} does not (use crossfade)")

    @classmethod
    def from_section(cls, section: Section) -> "ExecutorConfig":
        """Read an `executor:` mapping of a YAML file; errors name the file and field."""
        names = {f.name for f in fields(cls)}
        section.unknown_keys(names)
        try:
            return cls(**{name: section.raw(name) for name in names if section.has(name)})
        except ConfigError as exc:
            raise section.error(exc.field, exc.problem) from None


@dataclass(frozen=True)
class ActionPrefix:
    """Actions already committed for slots 0 .. d-1 of the chunk being requested (action i at stamp + i * dt).

    A backend that `supports_prefix` conditions on them (real-time chunking) so its chunk continues them.
    """

    actions: np.ndarray
    dt: float
    stamp: float


@dataclass(frozen=True)
class TickResult:
    """What to do at tick time `now`.

    action:  the command for [now, now + control_dt) in the policy's action space, or while holding the hold
             target (last absolute target, zero motion for rate columns), or None (nothing to publish).
    hold:    None while executing; else why not: "startup" (no chunk yet), "awaiting_chunk" (sync waits by
             design), "underflow" (async / ensemble ran out of actions).
    request: ask the policy worker for a chunk now, answering an observation captured after `request_after`.
    sources: ids of the chunks that contributed to `action` (empty while holding).
    """

    now: float
    action: np.ndarray | None
    hold: str | None
    request: bool
    request_after: float
    sources: frozenset[int]

    @property
    def running(self) -> bool:
        return self.hold is None


@dataclass(frozen=True)
class ExecutorStats:
    ticks: int
    commands: int
    holds: dict[str, int]  # hold ticks by reason
    underflows: int  # underflow episodes (consecutive underflow ticks count once)
    accepted_chunks: int
    repeated_chunks: int  # the newest chunk again (same stamp and actions): nothing new, not a rejection
    rejected_chunks: dict[str, int]  # by reason
    last_rejection: str | None
    inference_errors: int
    last_inference_error: str | None
    handovers: int  # chunks merged into a running plan (async / ensemble)
    prefix_overruns: int  # prefix chunks that arrived after their prefix ran out (crossfaded instead)
    blend_steps_mean: float | None  # mean crossfade length, chunk steps
    request_threshold_steps: float | None  # async: the plan length under which a chunk is requested
    latency_last: float | None  # now - chunk.stamp at arrival, seconds
    latency_max: float | None
    latency_mean: float | None
    disagreement_last: float | None  # RMS over the overlap and motion columns, new chunk vs the previous one
    disagreement_max: float | None
    disagreement_mean: float | None
    disagreement_last_per_column: tuple[float, ...] | None  # per action column (gripper included)
    boundary_jerk_max: float | None
    in_chunk_jerk: float | None
    boundary_jerk_ratio: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _convert_rotations(rows: np.ndarray, source: str, target: str) -> np.ndarray:
    """(n, width) rotations in form `source` -> (n, width') in form `target`."""
    return np.array([from_matrix(target, to_matrix(source, row)) for row in np.atleast_2d(rows)])


class ActionAlgebra:
    """Column roles of an ActionSpace and arithmetic that respects them, on a "work" representation.

    Work representation = the action vector, except absolute axis-angle rotations become quaternions (so they can be
    averaged) and quaternion deltas become rotation vectors (so they can be scaled and summed).
    """

    def __init__(self, space: ActionSpace):
        self.space = space
        self.velocity = space.kind == "joint_vel"
        rate_kind = space.kind in RATE_KINDS
        self._converts: list[tuple[slice, slice, str, str]] = []  # (external, work, external form, work form)
        angle, quats, rate, motion = [], [], [], []
        ext = work = 0

        def take(ext_width: int, work_width: int, convert: tuple[str, str] | None = None) -> list[int]:
            nonlocal ext, work
            if convert:
                self._converts.append((slice(ext, ext + ext_width), slice(work, work + work_width), *convert))
            cols = list(range(work, work + work_width))
            ext, work = ext + ext_width, work + work_width
            return cols

        for arm in range(len(space.arms)):
            if space.is_ee:
                arm_motion = take(3, 3)
                if space.kind == "ee_delta" and space.rotation == "quat":
                    arm_motion += take(4, 3, ("quat", "axis_angle"))
                elif space.kind == "ee_delta" or space.rotation == "rpy":
                    cols = take(3, 3)
                    arm_motion += cols
                    if space.kind == "ee_pose":
                        angle += cols
                else:  # absolute quat or axis-angle: averaged as quaternions
                    cols = take(4, 4) if space.rotation == "quat" else take(3, 4, ("axis_angle", "quat"))
                    quats.append(cols)
                    arm_motion += cols
            else:
                arm_motion = take(space.motion_width(arm), space.motion_width(arm))
            motion += arm_motion
            if rate_kind:
                rate += arm_motion
            if space.gripper is not None:
                take(1, 1)
        self.work_dim = work
        self.angle_cols = np.array(angle, dtype=int)
        self.quat_groups = [np.array(g, dtype=int) for g in quats]
        self.rate_cols = np.array(rate, dtype=int)
        self.motion_cols = np.array(motion, dtype=int)
        ext_converted = {i for e, *_ in self._converts for i in range(e.start, e.stop)}
        work_converted = {i for _, w, *_ in self._converts for i in range(w.start, w.stop)}
        self._ext_kept = np.array([i for i in range(space.dim) if i not in ext_converted], dtype=int)
        self._work_kept = np.array([i for i in range(work) if i not in work_converted], dtype=int)
        # external columns of each arm's quaternion (EE kinds with rotation "quat"), for the norm check
        self._ext_quats = []
        if space.is_ee and space.rotation == "quat":
            starts = np.cumsum([0] + [space.arm_width(a) for a in range(len(space.arms))])[:-1]
            self._ext_quats = [np.arange(s + 3, s + 7) for s in starts]

    # representation ----------------------------------------------------------------------------------------------
    def encode(self, actions: np.ndarray) -> np.ndarray:
        """(T, D) actions -> (T, work_dim); quaternions renormalised."""
        actions = np.asarray(actions, dtype=np.float64)
        if not self._converts and not self.quat_groups:
            return actions.copy()
        out = np.empty((len(actions), self.work_dim))
        out[:, self._work_kept] = actions[:, self._ext_kept]
        for ext, work, ext_form, work_form in self._converts:
            out[:, work] = _convert_rotations(actions[:, ext], ext_form, work_form)
        for g in self.quat_groups:
            out[:, g] /= np.linalg.norm(out[:, g], axis=1, keepdims=True)
        return out

    def decode(self, vec: np.ndarray) -> np.ndarray:
        """(work_dim,) -> (D,) in the policy's action space."""
        if not self._converts:
            return vec.copy()
        out = np.empty(self.space.dim)
        out[self._ext_kept] = vec[self._work_kept]
        for ext, work, ext_form, work_form in self._converts:
            out[ext] = _convert_rotations(vec[work], work_form, ext_form)[0]
        return out

    def check_quaternions(self, actions: np.ndarray) -> None:
        """Raise BadChunkError if a quaternion column group is far from unit norm."""
        for cols in self._ext_quats:
            norms = np.linalg.norm(actions[:, cols], axis=1)
            bad = np.flatnonzero(np.abs(norms - 1) > QUAT_NORM_TOLERANCE)
            if bad.size:
                raise BadChunkError(f"quaternion at step {bad[0]}, columns {cols[0]}..{cols[-1]} has norm "
                                    f"{norms[bad[0]]:.3f}, expected 1")

    # arithmetic on work vectors ----------------------------------------------------------------------------------
    def difference(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a - b, angles the short way round, quaternions sign-aligned to b first."""
        d = a - b
        if self.angle_cols.size:
            d[..., self.angle_cols] = _wrap(d[..., self.angle_cols])
        for g in self.quat_groups:
            sign = np.where(np.sum(a[..., g] * b[..., g], axis=-1, keepdims=True) < 0, -1.0, 1.0)
            d[..., g] = a[..., g] * sign - b[..., g]
        return d

    def mean(self, samples: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Weighted mean over axis 0 of (n, ..., work_dim) samples with (n, ...) weights.

        Angles average as deviations from samples[0] (so the result stays on samples[0]'s branch), quaternions by
        normalised weighted sum after aligning signs with samples[0]; everything else linearly.
        """
        w = weights / np.sum(weights, axis=0)
        ref = samples[0]
        out = ref + np.sum(w[..., None] * self.difference(samples, ref), axis=0)
        for g in self.quat_groups:
            q = samples[..., g]
            sign = np.where(np.sum(q * ref[..., g], axis=-1, keepdims=True) < 0, -1.0, 1.0)
            s = np.sum(w[..., None] * q * sign, axis=0)
            out[..., g] = s / np.linalg.norm(s, axis=-1, keepdims=True)
        return out

    def interpolate(self, values: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Linear interpolation of (T, work_dim) slot values at fractional slot indices u (clipped to the chunk)."""
        u = np.minimum(np.maximum(u, 0.0), len(values) - 1)  # np.clip, without its call overhead
        i0 = u.astype(int)  # u >= 0: truncation is floor
        return self.lerp(values[i0], values[np.minimum(i0 + 1, len(values) - 1)], u - i0)

    def lerp(self, a: np.ndarray, b: np.ndarray, f: np.ndarray) -> np.ndarray:
        """Rows a + f (b - a) of (n, work_dim) rows a, b and (n,) fractions f: angles the short way round,
        quaternions by normalised lerp (sign-aligned to a).

        The same numbers, bit for bit, as `mean` of [a, b] with weights (1 - f, f), whose normalised weights
        (f / ((1 - f) + f)) it reproduces, in a fraction of the numpy calls: this runs for every track sampled at
        every control tick.
        """
        total = (1 - f) + f
        w_b = (f / total)[:, None]
        out = a + w_b * self.difference(b, a)
        for g in self.quat_groups:
            sign = np.where(np.sum(b[:, g] * a[:, g], axis=-1, keepdims=True) < 0, -1.0, 1.0)
            s = ((1 - f) / total)[:, None] * a[:, g] + w_b * b[:, g] * sign
            out[:, g] = s / np.linalg.norm(s, axis=-1, keepdims=True)
        return out

    def renormalized(self, vec: np.ndarray) -> np.ndarray:
        """`vec` with its quaternions rescaled to unit norm (after an additive correction)."""
        for g in self.quat_groups:
            vec[..., g] /= np.linalg.norm(vec[..., g], axis=-1, keepdims=True)
        return vec

    def motion_increments(self, prev: np.ndarray, cur: np.ndarray, step_dt: float) -> np.ndarray:
        """Motion (position-like) from command `prev` to command `cur` one step of `step_dt` later."""
        inc = self.difference(cur, prev)
        if self.rate_cols.size:
            inc[..., self.rate_cols] = cur[..., self.rate_cols] * (step_dt if self.velocity else 1.0)
        return inc[..., self.motion_cols]

    def jerks(self, values: np.ndarray, step_dt: float) -> np.ndarray:
        """Third-difference jerk norms of a (n, work_dim) command sequence, one per 4-sample window."""
        return self.increment_jerks(self.motion_increments(values[:-1], values[1:], step_dt), step_dt)

    @staticmethod
    def increment_jerks(inc: np.ndarray, step_dt: float) -> np.ndarray:
        """Jerk norms from (n, motion) consecutive motion increments, one per three consecutive increments."""
        third = inc[2:] - 2 * inc[1:-1] + inc[:-2]
        return np.sqrt(np.add.reduce(third * third, axis=-1)) / step_dt**3  # np.linalg.norm's own formula, per tick


def percentile_95(values: np.ndarray) -> float:
    """np.percentile(values, 95) of a 1-D array of finite values, with numpy's default ("linear") rule and
    arithmetic, so the same number to the bit; written out because np.percentile's argument handling costs ~30 us
    and this runs at every accepted chunk (20 per second when a playback policy answers every camera frame)."""
    ordered = np.sort(values)
    position = (len(ordered) - 1) * 0.95
    below = math.floor(position)
    if below >= len(ordered) - 1:
        return float(ordered[-1])
    low, high = float(ordered[below]), float(ordered[below + 1])
    fraction, step = position - below, high - low
    return high - step * (1 - fraction) if fraction >= 0.5 else low + step * fraction  # numpy's _lerp


def blend_weight(s: float) -> float:
    """Weight of the new chunk at blend progress s in [0, 1]: the minimum-peak-jerk S-curve.

    Jerk is +32, -32, +32 on [0, 1/4), [1/4, 3/4), [3/4, 1]: position, velocity and acceleration are continuous at
    both ends, and absorbing an offset d between the chunks over a window T adds at most 32 d / T**3 of jerk (a
    linear ramp steps the velocity; the quintic min-jerk ramp peaks at 60 d / T**3).
    """
    s = min(max(s, 0.0), 1.0)
    if s < 0.25:
        return 16.0 / 3.0 * s**3
    if s < 0.75:
        u = s - 0.25
        return 1.0 / 12.0 + u + 4.0 * u**2 - 16.0 / 3.0 * u**3
    return 1.0 - 16.0 / 3.0 * (1.0 - s) ** 3


class _Sample(NamedTuple):
    vec: np.ndarray
    sources: frozenset[int]


class _Track:
    """One accepted chunk on the timeline: slot i at start + i * dt; covers [start, start + steps * dt)."""

    def __init__(self, ident: int, chunk: ActionChunk, values: np.ndarray, algebra: ActionAlgebra):
        self.id, self.stamp, self.dt, self.values, self.algebra = ident, chunk.stamp, chunk.dt, values, algebra
        self.start = chunk.stamp
        self.steps = len(values)
        self._alone: tuple[tuple[float, int], _TrackSet] | None = None  # ((start, steps), this track as a set)

    @property
    def end(self) -> float:
        return self.start + self.steps * self.dt

    def covers(self, t: float) -> bool:
        return self.start - _EPS <= t < self.end - _EPS

    def values_at(self, times: np.ndarray) -> np.ndarray:
        """Slot values interpolated at `times` (rate columns as per-slot values): for comparing chunks."""
        return self.algebra.interpolate(self.values, (np.asarray(times) - self.start) / self.dt)

    def sample(self, t: float, control_dt: float) -> _Sample | None:
        if not self.covers(t):
            return None
        placement = (self.start, self.steps)
        if self._alone is None or self._alone[0] != placement:
            self._alone = placement, _TrackSet([self], self.algebra)
        return _Sample(self._alone[1].sample(t, control_dt)[0], frozenset((self.id,)))

    def prune(self, t: float):
        return self if t < self.end - _EPS else None


class _TrackSet:
    """Placed tracks sampled in one numpy pass: the crossfade samples every track its running ramps hand over
    between at every tick, the ensemble every chunk it averages; per track that was a dozen small numpy calls each.

    A track's command at t (a time it covers): absolute columns by `ActionAlgebra.lerp` between the two slots around
    t (the last slot holds); rate columns as the slot values weighted by how much of each slot [t, t + control_dt)
    covers, summed slot by slot (a velocity then divided by control_dt / dt). Every operation is elementwise (no
    BLAS), so a track's command does not depend on which other tracks share the pass: equal chunks sampled at equal
    times give exactly equal commands.
    """

    def __init__(self, tracks: list[_Track], algebra: ActionAlgebra):
        self.algebra = algebra
        self.ids = [tr.id for tr in tracks]
        lengths = [len(tr.values) for tr in tracks]
        self._values = np.concatenate([tr.values for tr in tracks])  # track k's slots from row _first[k]
        self._first = np.cumsum([0] + lengths[:-1])[:, None]
        self._last = np.array(lengths)[:, None] - 1
        self._start, self._dt, self._steps = np.array([(tr.start, tr.dt, tr.steps) for tr in tracks]).T
        self._end = self._start + self._steps * self._dt
        self._min_dt = float(self._dt.min())
        self._spans: tuple[float, np.ndarray] | None = None  # (control_dt, control_dt / dt per track, as a column)

    def covering(self, t: float) -> np.ndarray:
        """Mask of the tracks that cover t (as `_Track.covers`)."""
        return (self._start - _EPS <= t) & (t < self._end - _EPS)

    def sample(self, t: float | np.ndarray, control_dt: float, rows: np.ndarray | None = None) -> np.ndarray:
        """Commands (n, work_dim): of every track at t, or of track rows[j] at t[j]."""
        if self._spans is None or self._spans[0] != control_dt:
            self._spans = control_dt, (control_dt / self._dt)[:, None]
        columns = self._first, self._last, self._start, self._dt, self._steps, self._spans[1]
        first, last, start, dt, steps, span = columns if rows is None else (c[rows] for c in columns)
        u0 = np.maximum((t - start) / dt, 0.0)[:, None]
        # slots floor(u0) .. floor(u0) + k: the two the lerp needs and every slot [t, t + control_dt) touches
        # (at most ceil(control_dt / dt) + 1), clamped to the track's last one, gathered in one go
        slots = u0.astype(int) + np.arange(max(math.ceil(control_dt / self._min_dt), 1) + 1)  # u0 >= 0: floor
        block = self._values[first + np.minimum(slots, last)]
        fraction = (np.minimum(u0, last) - np.minimum(slots[:, :1], last))[:, 0]
        vec = self.algebra.lerp(block[:, 0], block[:, 1], fraction)
        rate = self.algebra.rate_cols
        if rate.size:
            # the part of each slot [u0, u1) covers, u1 cut at the end of the track; slots past either cover none
            u1 = np.minimum(u0 + span, steps[:, None])
            covered = np.maximum(np.minimum(u1, slots + 1) - np.maximum(u0, slots), 0.0)
            vec[:, rate] = np.add.reduce(covered[..., None] * block, axis=1)[:, rate]
            if self.algebra.velocity:
                vec[:, rate] *= (dt / control_dt)[:, None]
        return vec


class _Ramp:
    """One crossfade from `prev` to `new` starting at `start`, as the correction (1 - w) * (prev - new).

    Past the last tick at or before the last action of prev (or new) (`until`; ticks fall every control_dt from
    `start`), the difference prev - new is extrapolated linearly from its value and slope there. A ramp can thus
    outlast the old chunk: its length is set by how gently the disagreement is absorbed, not by how much the chunks
    overlap (at 300 ms latency a 50-step chunk overlaps its successor by barely a dozen steps). Anchoring on a tick
    keeps the ripple of linear interpolation (zero on slots, largest between them) from stepping at the switch.
    """

    def __init__(self, prev, new: _Track, start: float, algebra: ActionAlgebra, control_dt: float):
        self.prev, self.new, self.start, self.algebra = prev, new, start, algebra
        self.duration = 0.0  # set by the executor from offset / offset_rate
        self.finished = False  # set by _Blend.prune once a tick at or past start + duration has run
        last = min(prev.end, new.end) - new.dt  # after its last action, a chunk's last slot merely holds it
        self.until = start + max(math.floor((last - start) / control_dt + 1e-9), 0) * control_dt
        self.prev_sources = frozenset((prev.id,)) if isinstance(prev, _Track) else \
            prev.sample(start, control_dt).sources
        # slope over the last few ticks before `until`: local, so the correction stays smooth where it switches to
        # the extrapolation; on the tick grid both chunks are sampled at a fixed phase, so it carries no ripple
        back = min(_SLOPE_TICKS, round((self.until - start) / control_dt)) * control_dt
        times = [start, self.until - back, self.until]
        if isinstance(prev, _Track):  # both tracks at the three times in one pass
            vectors = _TrackSet([prev, new], algebra).sample(np.array(times * 2), control_dt,
                                                              rows=np.repeat([0, 1], len(times)))
            prev_vectors, new_vectors = vectors[:len(times)], vectors[len(times):]
        else:
            prev_vectors = np.array([prev.sample(t, control_dt).vec for t in times])
            new_vectors = np.array([new.sample(t, control_dt).vec for t in times])
        self.offset, before_until, self.at_until = algebra.difference(prev_vectors, new_vectors)
        self.offset_rate = (self.at_until - before_until) / back if back > 0 else np.zeros_like(self.offset)

    def weight(self, t: float) -> float:
        """Weight of the old side (1 at start, 0 at the end)."""
        return 1.0 - blend_weight((t - self.start) / self.duration)


class _Blend:
    """Async hand-overs: the newest track plus the crossfade ramps still running, telescoped.

    command = head + sum_k (1 - w_k) * (prev_k - new_k), where ramp k hands over from prev_k (the head before it)
    to new_k. Each ramp corrects by the difference between two raw chunks, which is smooth and safe to
    extrapolate, rather than by a difference to a plan that is itself mid-blend. Up to `until` a ramp measures the
    difference at the tick, after it extrapolates it (see `_Ramp`).
    """

    def __init__(self, ramp: _Ramp, algebra: ActionAlgebra):
        self.head, self.ramps, self.algebra = ramp.new, [ramp], algebra
        self._stacked = False

    def hand_over(self, ramp: _Ramp) -> None:
        self.ramps = [r for r in self.ramps if not r.finished] + [ramp]
        self.head = ramp.new
        self._stacked = False

    def _stack(self) -> None:
        """Index the tracks and ramps for sampling in one pass; redone after ramps come or go, not per tick."""
        tracks = {id(self.head): self.head}  # the head is row 0
        for ramp in self.ramps:
            for plan in (ramp.prev, ramp.new):
                if isinstance(plan, _Track):
                    tracks.setdefault(id(plan), plan)
        row = {key: k for k, key in enumerate(tracks)}
        self._tracks = _TrackSet(list(tracks.values()), self.algebra)
        self._prev_rows = np.array([row.get(id(ramp.prev), 0) for ramp in self.ramps])
        self._new_rows = np.array([row[id(ramp.new)] for ramp in self.ramps])
        # a prev that is not a single track (a _Switch still running its committed prefix) is sampled on its own
        self._composite = [k for k, ramp in enumerate(self.ramps) if not isinstance(ramp.prev, _Track)]
        self._until = np.array([ramp.until for ramp in self.ramps])
        self._at_until = np.array([ramp.at_until for ramp in self.ramps])
        self._offset_rate = np.array([ramp.offset_rate for ramp in self.ramps])
        self._stacked = True

    @property
    def end(self) -> float:
        return self.head.end

    def covers(self, t: float) -> bool:
        return self.head.covers(t)

    def sample(self, t: float, control_dt: float) -> _Sample | None:
        if not self.head.covers(t):
            return None
        if not self._stacked:
            self._stack()
        vectors = self._tracks.sample(t, control_dt)
        weights = [0.0 if ramp.finished else ramp.weight(t) for ramp in self.ramps]
        measuring = t <= self._until + _EPS
        prev = vectors[self._prev_rows]
        for k in self._composite:
            if measuring[k] and weights[k] > 0.0:
                prev[k] = self.ramps[k].prev.sample(t, control_dt).vec
        corrections = np.where(measuring[:, None], self.algebra.difference(prev, vectors[self._new_rows]),
                               self._at_until + self._offset_rate * (t - self._until)[:, None])
        # the head, then each ramp in order: the same sums as adding one correction at a time (a finished ramp,
        # weight 0 as if pruned, adds an exact zero)
        vec = np.add.reduce(np.concatenate([vectors[:1], np.array(weights)[:, None] * corrections]), axis=0)
        sources = frozenset((self.head.id,)).union(*(r.prev_sources for r, w in zip(self.ramps, weights) if w > 0))
        return _Sample(self.algebra.renormalized(vec), sources)

    def prune(self, t: float):
        """Finished ramps stay (weight 0) until the next hand-over re-indexes: one re-index per chunk, not two."""
        for ramp in self.ramps:
            ramp.finished = ramp.finished or t >= ramp.start + ramp.duration - _EPS
        return self.head.prune(t) if all(ramp.finished for ramp in self.ramps) else self


class _Switch:
    """Old plan until `at` (the end of a committed prefix), the new track from then on."""

    def __init__(self, old, new: _Track, at: float):
        self.old, self.new, self.at = old, new, at

    @property
    def end(self) -> float:
        return self.new.end

    def covers(self, t: float) -> bool:
        return self.old.covers(t) if t < self.at - _EPS else self.new.covers(t)

    def sample(self, t: float, control_dt: float) -> _Sample | None:
        return (self.old.sample(t, control_dt) if t < self.at - _EPS else None) or self.new.sample(t, control_dt)

    def prune(self, t: float):
        return self.new.prune(t) if t >= self.at - _EPS else self


class _Ensemble:
    """ACT temporal ensembling over the tracks covering t, oldest first, weight exp(-coeff * rank)."""

    def __init__(self, track: _Track, coeff: float, algebra: ActionAlgebra):
        self.tracks, self.coeff, self.algebra = [track], coeff, algebra
        self._stacked: _TrackSet | None = None  # the tracks, for sampling in one pass; rebuilt when they change

    def add(self, track: _Track) -> None:
        self.tracks.append(track)
        self._stacked = None

    @property
    def end(self) -> float:
        return max(tr.end for tr in self.tracks)

    def covers(self, t: float) -> bool:
        return any(tr.covers(t) for tr in self.tracks)

    def sample(self, t: float, control_dt: float) -> _Sample | None:
        if self._stacked is None:
            self._stacked = _TrackSet(self.tracks, self.algebra)
        covering = self._stacked.covering(t)
        if not covering.any():
            return None
        samples = self._stacked.sample(t, control_dt)[covering]
        weights = np.exp(-self.coeff * np.arange(len(samples)))
        return _Sample(self.algebra.mean(samples, weights), frozenset(compress(self._stacked.ids, covering)))

    def prune(self, t: float):
        tracks = [tr for tr in self.tracks if t < tr.end - _EPS]
        if len(tracks) != len(self.tracks):
            self.tracks, self._stacked = tracks, None
        return self if self.tracks else None


class _MotionClock:
    """Motion time: wall time during which the executor was executing, frozen while it holds.

    Chunks live on this clock (a chunk starts at the motion time of its observation's capture stamp), so time spent
    holding (start-up, a synchronous wait, an underflow) never counts as motion the robot has made: an observation
    taken while the robot stood still is answered from where the robot still stands.
    """

    def __init__(self):
        self._runs: deque[tuple[float, float]] = deque()  # finished execution intervals, oldest first
        self._run_start: float | None = None  # start of the current execution interval
        self._forgotten = 0.0  # motion time of intervals dropped from `_runs`

    def at(self, t: float) -> float:
        tau = self._forgotten + sum(max(0.0, min(end, t) - start) for start, end in self._runs)
        if self._run_start is not None:
            tau += max(0.0, t - self._run_start)
        return tau

    def executing(self, t: float) -> None:
        if self._run_start is None:
            self._run_start = t

    def holding(self, t: float) -> None:
        if self._run_start is not None:
            self._runs.append((self._run_start, t))
            self._run_start = None

    def forget_before(self, t: float) -> None:
        """Fold intervals that ended before `t` into a constant (`at` is then only exact from `t` on)."""
        while self._runs and self._runs[0][1] <= t:
            start, end = self._runs.popleft()
            self._forgotten += end - start


class ChunkExecutor:
    """Places policy chunks on the timeline and emits one command per control tick (see the module docstring)."""

    def __init__(self, config: ExecutorConfig, metadata: PolicyMetadata):
        config.check_against(metadata)
        self.config, self.metadata = config, metadata
        self.algebra = ActionAlgebra(metadata.action_space)
        self.chunk_dt = 1.0 / metadata.rate_hz
        self._motion = _MotionClock()
        self._plan = None  # a _Track, _Blend, _Switch or _Ensemble, on the motion clock
        self._arrived: list[_Track] = []
        self._next_id = 0
        self._newest_stamp = -math.inf
        self._newest_chunk: ActionChunk | None = None  # the last chunk submit took (None after a reset)
        self._last_track: _Track | None = None
        self._last_now = -math.inf
        self._started = False  # a chunk has been executed since construction / reset
        self._holding = True
        self._hold_target: np.ndarray | None = None  # work vector of the last command, rate columns zeroed
        self._pending_prefix: tuple[float, float] | None = None  # (observation stamp, prefix end in motion time)
        # statistics
        self._ticks = self._commands = self._underflows = self._accepted = self._repeated = 0
        self._handovers = self._prefix_overruns = self._inference_errors = 0
        self._holds: Counter = Counter()
        self._rejected: Counter = Counter()
        self._last_rejection = self._last_inference_error = None
        self._latencies: deque[float] = deque(maxlen=config.latency_window)
        self._latency_last = self._latency_max = None
        self._latency_sum, self._latency_count = 0.0, 0
        self._disagreement_last = self._disagreement_max = None
        self._disagreement_sum, self._disagreement_count = 0.0, 0
        self._disagreement_last_per_column: tuple[float, ...] | None = None
        self._blend_steps_sum, self._blend_count = 0.0, 0
        self._chunk_jerks: deque[float] = deque(maxlen=_REFERENCE_CHUNKS)
        self._last_command: np.ndarray | None = None  # work vector of the last tick that published one
        self._recent_increments: deque[np.ndarray] = deque(maxlen=3)  # motion between the last 4 of them
        self._recent_sources: deque[frozenset[int]] = deque(maxlen=4)
        self._boundary_jerk_max: float | None = None

    # inputs ------------------------------------------------------------------------------------------------------
    def submit(self, chunk: object, now: float) -> bool:
        """Take a chunk that arrived at `now`; it is placed on the timeline at the next tick. False if rejected.

        A chunk that passes here can still be dropped at that tick if nothing of it is left to execute ("expired")
        or a synchronous segment is running ("unexpected"). Every rejection is counted by reason, its message kept
        in `stats().last_rejection`, and the executor keeps serving the plan it had. A chunk identical to the newest
        one (same stamp, dt and actions: the same answer again, as a playback policy gives every observation
        between two recorded actions) is already in the plan: it is counted in `repeated_chunks`, and True.
        """
        try:
            chunk = validate_chunk(chunk, self.metadata, now, self.config.max_chunk_age)
        except BadChunkError as exc:
            return self._reject(exc.reason, str(exc))
        name = self.metadata.name
        if not math.isclose(chunk.dt, self.chunk_dt, rel_tol=1e-6):
            return self._reject("dt", f"policy {name}: chunk dt {chunk.dt:g} s, expected {self.chunk_dt:g} s "
                                      f"(rate_hz {self.metadata.rate_hz:g})")
        if chunk.stamp > now + self.config.control_dt:
            return self._reject("future_stamp", f"policy {name}: observation stamp {chunk.stamp:.3f} is "
                                                f"{chunk.stamp - now:.3f} s in the future of the control clock "
                                                f"{now:.3f} (camera and control clocks disagree)")
        if chunk.stamp <= self._newest_stamp:
            newest = self._newest_chunk
            if newest is not None and chunk.stamp == newest.stamp and chunk.dt == newest.dt \
                    and np.array_equal(chunk.actions, newest.actions):
                self._repeated += 1
                return True
            return self._reject("out_of_order", f"policy {name}: observation stamp {chunk.stamp:.3f} is not newer "
                                                f"than {self._newest_stamp:.3f} (already answered, or superseded "
                                                f"by a reset)")
        try:
            self.algebra.check_quaternions(chunk.actions)
        except BadChunkError as exc:
            return self._reject("quaternion", f"policy {name}: {exc}")
        self._arrived.append(_Track(self._next_id, chunk, self.algebra.encode(chunk.actions), self.algebra))
        self._next_id += 1
        self._newest_stamp, self._newest_chunk = chunk.stamp, chunk
        latency = now - chunk.stamp
        self._latencies.append(latency)
        self._latency_last = latency
        self._latency_max = latency if self._latency_max is None else max(self._latency_max, latency)
        self._latency_sum += latency
        self._latency_count += 1
        return True

    def record_inference_error(self, message: str) -> None:
        """Count a failed inference (raised, timed out); the executor keeps holding / executing meanwhile."""
        self._inference_errors += 1
        self._last_inference_error = message

    def reset(self, now: float) -> None:
        """Drop every chunk (e.g. the instruction changed) and hold; answers to older observations are refused."""
        self._plan = None
        self._arrived.clear()
        self._last_track = None
        self._pending_prefix = None
        self._newest_stamp = max(self._newest_stamp, now)
        self._newest_chunk = None
        self._started = False

    def _restart_timeline(self, now: float) -> None:
        """The clock went back (sim time reset, a bag looping, an NTP step): chunks placed on the old timeline mean
        nothing on the new one. Drop them and the motion clock and hold; answers to observations of the old clock
        are refused as from the future (submit), answers on the new clock are taken."""
        self.reset(now)
        self._motion = _MotionClock()
        self._newest_stamp = -math.inf
        self._recent_increments.clear()
        self._recent_sources.clear()

    # the control tick --------------------------------------------------------------------------------------------
    def tick(self, now: float) -> TickResult:
        if now < self._last_now:
            self._restart_timeline(now)
        self._last_now = now
        self._ticks += 1
        tau = self._motion.at(now)
        self._integrate_arrivals(tau)
        sample = self._plan.sample(tau, self.config.control_dt) if self._plan is not None else None
        if sample is not None:
            self._motion.executing(now)
            self._started, self._holding = True, False
            self._commands += 1
            self._hold_target = sample.vec.copy()
            if self.algebra.rate_cols.size:
                self._hold_target[self.algebra.rate_cols] = 0.0
            action, hold, sources, work = self.algebra.decode(sample.vec), None, sample.sources, sample.vec
        else:
            hold = self._hold_reason()
            self._underflows += hold == "underflow" and not self._holding  # episodes, not ticks
            self._holding = True
            self._motion.holding(now)
            self._holds[hold] += 1
            sources, work = frozenset(), self._hold_target
            publish = self.config.hold_on_underflow and work is not None
            action = self.algebra.decode(work) if publish else None
        if work is not None:
            self._observe_jerk(work, sources)
        request = self._wants_chunk(tau, hold is not None)
        if self._plan is not None:
            self._plan = self._plan.prune(tau)
        self._motion.forget_before(now - 2 * self.config.max_chunk_age)
        return TickResult(now, action, hold, request, self._newest_stamp, sources)

    def _hold_reason(self) -> str:
        if not self._started:
            return "startup"
        return "awaiting_chunk" if self.config.mode == "sync" else "underflow"

    def _wants_chunk(self, tau: float, holding: bool) -> bool:
        if self.config.mode == "ensemble" or holding:
            return True
        if self.config.mode == "sync":
            return False
        return (self._plan.end - tau) / self.chunk_dt < self.request_threshold_steps()

    def request_threshold_steps(self) -> float:
        """Async: request a chunk while fewer chunk steps than this are left in the plan."""
        steps = self.config.queue_threshold * self.metadata.horizon
        if self.config.adapt_threshold and self._latencies:
            blend = self.config.blend_steps if self.config.blend == "crossfade" else 0
            steps = max(steps, self._latency_steps() + blend + 1)
        return min(steps, float(self.metadata.horizon))

    def _latency_steps(self) -> int:
        """The worst recent latency in chunk steps, rounded up (RTC's inference_delay)."""
        return math.ceil(max(self._latencies) / self.chunk_dt - 1e-9) if self._latencies else 0

    def prefix(self, stamp: float) -> ActionPrefix | None:
        """The committed actions for a request answering the observation captured at `stamp` (blend="prefix").

        Covers the worst recent latency plus one step; None when there is no running plan to take them from.
        """
        if self.config.mode != "async" or self.config.blend != "prefix" or self._plan is None or not self._latencies:
            return None
        start = self._motion.at(stamp)
        actions = []
        for i in range(min(self._latency_steps() + 1, self.metadata.horizon - 1)):
            sample = self._plan.sample(start + i * self.chunk_dt, self.chunk_dt)
            if sample is None:
                break
            actions.append(self.algebra.decode(sample.vec))
        if not actions:
            return None
        self._pending_prefix = (stamp, start + len(actions) * self.chunk_dt)
        return ActionPrefix(np.array(actions), self.chunk_dt, stamp)

    # chunk arrival (all times on the motion clock) ---------------------------------------------------------------
    def _integrate_arrivals(self, tau: float) -> None:
        arrived, self._arrived = self._arrived, []
        for track in arrived:
            track.start = self._motion.at(track.stamp)
            if track.start > tau + _EPS:  # stamped (slightly) after this tick: its first action is still ahead
                self._arrived.append(track)
                continue
            if self.config.mode == "sync":
                track.steps = min(track.steps, self.config.execute_steps or track.steps)
            if track.end <= tau + _EPS:
                self._reject("expired", f"policy {self.metadata.name}: chunk for stamp {track.stamp:.3f} has no "
                                        f"action left to execute")
            elif self._plan is None or not self._plan.covers(tau):
                self._plan = _Ensemble(track, self.config.ensemble_coeff, self.algebra) \
                    if self.config.mode == "ensemble" else track
                self._accept(track)
            elif self.config.mode == "sync":
                self._reject("unexpected", f"policy {self.metadata.name}: chunk for stamp {track.stamp:.3f} arrived "
                                           f"while a synchronous segment is executing; dropped")
            else:
                self._merge(track, tau)

    def _merge(self, track: _Track, tau: float) -> None:
        """Hand over from the running plan to `track` (async) or add it to the ensemble."""
        self._measure_disagreement(track, tau)
        self._handovers += 1
        if self.config.mode == "ensemble":
            self._plan.add(track)
        else:
            prefix, self._pending_prefix = self._pending_prefix, None
            answers_prefix = prefix is not None and prefix[0] == track.stamp
            self._prefix_overruns += answers_prefix and tau > prefix[1]
            if answers_prefix and tau <= prefix[1]:
                self._plan = _Switch(self._plan, track, prefix[1])
            elif self.config.blend_steps == 0:
                self._plan = track
            else:
                blend = self._plan if isinstance(self._plan, _Blend) else None
                ramp = _Ramp(blend.head if blend else self._plan, track, tau, self.algebra, self.config.control_dt)
                ramp.duration = self._ramp_duration(ramp)
                self._blend_steps_sum += ramp.duration / self.chunk_dt
                self._blend_count += 1
                if blend:
                    blend.hand_over(ramp)
                else:
                    self._plan = _Blend(ramp, self.algebra)
        self._accept(track)

    def _ramp_duration(self, ramp: _Ramp) -> float:
        """The shortest ramp within [blend_steps, max_blend_steps] whose added jerk stays within the budget.

        The S-curve has |dw/ds| <= 2, |d2w/ds2| <= 8, |d3w/ds3| <= 32, so correcting a position offset d with
        slope r over T seconds adds at most 32 |d| / T^3 + 56 |r| / T^2 of jerk; for rate columns (a velocity
        offset v with slope r) 8 |v| / T^2 + 12 |r| / T. Each term gets half of blend_jerk_budget x the chunks'
        own p95 jerk.
        """
        shortest = self.config.blend_steps * self.chunk_dt
        longest = max((self.config.max_blend_steps or self.metadata.horizon) * self.chunk_dt, shortest)
        reference = self._jerk_reference()
        if not self.config.blend_jerk_budget or not reference:
            return shortest
        budget = self.config.blend_jerk_budget * reference
        motion = self.algebra.motion_cols
        offset, rate = np.linalg.norm(ramp.offset[motion]), np.linalg.norm(ramp.offset_rate[motion])
        if self.algebra.rate_cols.size:  # per-tick displacements (deltas) or velocities
            per_second = 1.0 if self.algebra.velocity else 1.0 / self.config.control_dt
            needed = max((16 * offset * per_second / budget) ** 0.5, 24 * rate * per_second / budget)
        else:
            needed = max((64 * offset / budget) ** (1 / 3), (112 * rate / budget) ** 0.5)
        return min(max(shortest, needed), longest)

    def _jerk_reference(self) -> float | None:
        # statistics.median: the same number as np.median (the middle value, or the mean of the middle two) at a
        # tenth of the call overhead; this runs at every hand-over
        return statistics.median(self._chunk_jerks) if self._chunk_jerks else None

    def _accept(self, track: _Track) -> None:
        self._accepted += 1
        self._last_track = track
        jerks = self.algebra.jerks(track.values, track.dt)
        if jerks.size:
            self._chunk_jerks.append(percentile_95(jerks))

    def _measure_disagreement(self, track: _Track, tau: float) -> None:
        """RMS difference between `track` and the previous chunk over their common future slots."""
        old = self._last_track
        if old is None:
            return
        times = track.start + track.dt * np.arange(track.steps)
        times = times[(times >= max(tau, old.start)) & (times < old.end)]
        if not times.size:
            return
        diff = self.algebra.difference(track.values_at(times), old.values_at(times))
        per_column = np.sqrt(np.mean(diff**2, axis=0))
        self._disagreement_last_per_column = tuple(float(v) for v in per_column)
        rms = float(np.sqrt(np.mean(diff[:, self.algebra.motion_cols] ** 2)))
        self._disagreement_last = rms
        self._disagreement_max = rms if self._disagreement_max is None else max(self._disagreement_max, rms)
        self._disagreement_sum += rms
        self._disagreement_count += 1

    def _reject(self, reason: str, message: str) -> bool:
        self._rejected[reason] += 1
        self._last_rejection = message
        return False

    # statistics --------------------------------------------------------------------------------------------------
    def _observe_jerk(self, work: np.ndarray, sources: frozenset[int]) -> None:
        if self._last_command is not None:  # one increment per tick, not four commands re-differenced per tick
            self._recent_increments.append(self.algebra.motion_increments(self._last_command, work,
                                                                          self.config.control_dt))
        self._last_command = work
        self._recent_sources.append(sources)
        if len(self._recent_increments) < 3:
            return
        window = set(self._recent_sources)
        if len(window) == 1 and len(sources) == 1:
            return  # in-chunk window; the reference comes from the chunks themselves
        jerk = float(self.algebra.increment_jerks(np.array(self._recent_increments), self.config.control_dt)[0])
        self._boundary_jerk_max = jerk if self._boundary_jerk_max is None else max(self._boundary_jerk_max, jerk)

    def stats(self) -> ExecutorStats:
        reference = self._jerk_reference()
        boundary = self._boundary_jerk_max
        ratio = boundary / reference if boundary is not None and reference else None
        return ExecutorStats(
            ticks=self._ticks, commands=self._commands, holds=dict(self._holds), underflows=self._underflows,
            accepted_chunks=self._accepted, repeated_chunks=self._repeated, rejected_chunks=dict(self._rejected),
            last_rejection=self._last_rejection,
            inference_errors=self._inference_errors, last_inference_error=self._last_inference_error,
            handovers=self._handovers, prefix_overruns=self._prefix_overruns,
            blend_steps_mean=self._blend_steps_sum / self._blend_count if self._blend_count else None,
            request_threshold_steps=self.request_threshold_steps() if self.config.mode == "async" else None,
            latency_last=self._latency_last, latency_max=self._latency_max,
            latency_mean=self._latency_sum / self._latency_count if self._latency_count else None,
            disagreement_last=self._disagreement_last, disagreement_max=self._disagreement_max,
            disagreement_mean=self._disagreement_sum / self._disagreement_count if self._disagreement_count else None,
            disagreement_last_per_column=self._disagreement_last_per_column,
            boundary_jerk_max=boundary, in_chunk_jerk=reference, boundary_jerk_ratio=ratio,
        )
