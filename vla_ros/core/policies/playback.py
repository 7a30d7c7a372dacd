"""Playback: a policy that returns recorded actions, so replay evaluation can prove the chain reproduces a recording.

`infer(obs)` returns the recorded actions unchanged, starting with the one in force at the observation's stamp (the
last one recorded at or before it). The chunk is stamped with the recorded time of that action (not the
observation's), so the executor places every action at the time it was recorded; a chunk of more than one action
therefore needs evenly spaced recorded times. Starting at the action in force keeps the stamp at or before the
observation, as a live policy's is: starting at the next recorded action would stamp the chunk up to one recorded
interval in the future of the control clock, which the executor rejects (`future_stamp`). Observations between two
recorded actions are all answered with the same chunk; the executor recognises the repeat (`repeated_chunks`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies.errors import PlaybackExhaustedError
from vla_ros.core.policies.spec import checked_chunk, parse_action_space, positive_int
from vla_ros.core.types import ActionChunk, ActionSpace, Observation, PolicyMetadata


class PlaybackPolicy:
    def __init__(self, actions: np.ndarray, times: np.ndarray, action_space: ActionSpace, *, horizon: int = 10,
                 name: str = "playback", stamp_tolerance_s: float = 1e-6, jitter_tolerance: float = 0.05):
        """`actions` (N, D) recorded at `times` (N,) seconds. An action is in force at a stamp if its time is at
        most stamp + stamp_tolerance_s (bag times are integer nanoseconds). Multi-step chunks need every recorded
        interval within jitter_tolerance * dt of the median interval dt."""
        source = f"policy {name}"
        actions = np.array(actions, dtype=np.float64)
        times = np.array(times, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != action_space.dim or len(actions) == 0:
            raise ConfigError(source, "actions", f"shape {actions.shape}, expected (N > 0, {action_space.dim}) for "
                                                 f"the {action_space.kind} action space")
        if times.shape != (len(actions),):
            raise ConfigError(source, "times", f"shape {times.shape}, expected ({len(actions)},), one per action")
        if not (np.all(np.isfinite(actions)) and np.all(np.isfinite(times))):
            raise ConfigError(source, "actions", "recorded actions and times must be finite")
        intervals = np.diff(times)
        if np.any(intervals <= 0):
            i = int(np.argmax(intervals <= 0))
            raise ConfigError(source, "times", f"must increase strictly; times[{i + 1}] = {times[i + 1]} follows "
                                               f"{times[i]}")
        if len(times) == 1 and horizon > 1:
            raise ConfigError(source, "times", "one recorded action: use horizon 1")
        dt = float(np.median(intervals)) if len(times) > 1 else 1.0
        if horizon > 1 and np.max(np.abs(intervals - dt)) > jitter_tolerance * dt:
            worst = float(np.max(np.abs(intervals - dt)))
            raise ConfigError(source, "times", f"intervals deviate up to {worst:.4g} s from dt {dt:.4g} s; chunks of "
                                               f"{horizon} actions need even spacing (use horizon 1)")
        self.actions, self.times, self.stamp_tolerance_s = actions, times, stamp_tolerance_s
        self.dt = dt
        self.metadata = PolicyMetadata(name=name, action_space=action_space, horizon=horizon, rate_hz=1.0 / dt)

    def infer(self, observation: Observation) -> ActionChunk:
        if observation.stamp - self.stamp_tolerance_s >= self.times[-1] + self.dt:  # the last action's slot is over
            raise PlaybackExhaustedError(f"policy {self.metadata.name}: recording ends at {self.times[-1]:.3f} s, "
                                         f"observation stamp is {observation.stamp:.3f} s")
        # the action in force; before the recording starts, its first action
        first = max(int(np.searchsorted(self.times, observation.stamp + self.stamp_tolerance_s, side="right")) - 1, 0)
        last = min(first + self.metadata.horizon, len(self.times))
        info = {"index": first, "times": self.times[first:last].tolist()}
        return checked_chunk(self.metadata, self.actions[first:last], self.times[first], info, exact_horizon=False)


def from_config(cfg: Section, robot=None) -> PlaybackPolicy:
    """YAML keys: name, recording (.npz with arrays `actions` (N, D) and `times` (N,)) or inline actions / times,
    action_space, horizon, stamp_tolerance_s, jitter_tolerance."""
    cfg.unknown_keys({"backend", "name", "recording", "actions", "times", "action_space", "horizon",
                      "stamp_tolerance_s", "jitter_tolerance"})
    if cfg.has("recording") == (cfg.has("actions") or cfg.has("times")):
        raise cfg.error("recording", "give either recording (an .npz file) or inline actions and times")
    if cfg.has("recording"):
        path = Path(cfg.path("recording"))
        if not path.is_file():
            raise ConfigError(path, "", "recording file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                actions, times = data["actions"], data["times"]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(path, "", f"expected an .npz with arrays 'actions' and 'times': {exc}") from None
    else:
        actions, times = cfg.raw("actions"), cfg.floats("times")
        try:
            actions = np.array(actions, dtype=np.float64)
        except (TypeError, ValueError):
            raise cfg.error("actions", "expected a list of equal-length lists of numbers") from None
    return PlaybackPolicy(
        actions, times, parse_action_space(cfg.section("action_space"), robot),
        horizon=positive_int(cfg, "horizon", 10), name=cfg.str("name", "playback"),
        stamp_tolerance_s=cfg.float("stamp_tolerance_s", 1e-6), jitter_tolerance=cfg.float("jitter_tolerance", 0.05),
    )
