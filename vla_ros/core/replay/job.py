"""One bag through the replay chain into a directory: metrics.json, plots and report.md.

`vla-ros replay` and every task of `vla-ros evaluate` call `replay_to_directory`, so a fleet evaluation writes for
each bag exactly what a single replay of it writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Mapping

from vla_ros.core.config import Section, load_yaml
from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import ExecutorConfig
from vla_ros.core.replay.bag import Bag
from vla_ros.core.replay.run import ReplayOptions, read_actions, run_replay
from vla_ros.core.robot import RobotModel
from vla_ros.core.safety import SafetyConfig
from vla_ros.core.types import Policy


def load_safety_config(path: str | Path | None, robot: RobotModel) -> SafetyConfig:
    """The safety config replay runs with (default: config/safety.yaml); ConfigError naming the file otherwise."""
    from vla_ros.core.safety.config import default_safety_config_path

    path = Path(path) if path else default_safety_config_path()
    try:
        return SafetyConfig.from_yaml(path, robot)
    except ValueError as exc:  # a value SafetyConfig itself rejects (out of range)
        raise ConfigError(path, "", str(exc)) from None


class PolicySource:
    """A policy YAML (built-in name or path) resolved once; `for_bag` gives the policy for one bag.

    Every bag gets the same policy object, built on first use (`load` builds and checks it up front), except a
    playback policy given an actions topic: it plays that bag's own recorded actions, so it is built per bag (its
    skipped actions are returned for the metrics).
    """

    def __init__(self, policy: str | Path, robot: RobotModel, actions_topic: str | None = None):
        from vla_ros.core.policies import resolve_policy_config

        self.path = resolve_policy_config(policy)
        self.robot, self.actions_topic = robot, actions_topic
        self._config = load_yaml(self.path)
        self.plays_bag = self._config.get("backend") == "playback" and bool(actions_topic)
        self._space = None
        self._shared: Policy | None = None

    @property
    def name(self) -> str:
        if self._shared is not None:
            return self._shared.metadata.name
        return str(self._config.get("name", self.path.stem))

    @property
    def executor_defaults(self) -> dict:
        """The executor settings the policy prescribes (e.g. a LeRobot checkpoint's); a playback policy none."""
        self.load()
        return dict(self._shared.metadata.executor) if self._shared is not None else {}

    def load(self) -> None:
        """Build the shared policy (or check a per-bag playback policy's action space) now: its config errors are
        raised here rather than at the first bag."""
        if self.plays_bag:
            from vla_ros.core.policies.spec import parse_action_space

            if self._space is None:
                self._space = parse_action_space(Section(self._config, self.path).section("action_space"), self.robot)
        elif self._shared is None:
            from vla_ros.core.policies import make_policy

            self._shared = make_policy(self.path, self.robot)

    def check(self, config: ExecutorConfig) -> None:
        """ConfigError if `config` cannot run this policy (a per-bag playback policy is checked at its bag)."""
        self.load()
        if self._shared is not None:
            config.check_against(self._shared.metadata)

    def for_bag(self, bag: Bag) -> tuple[Policy, dict[str, int]]:
        self.load()
        if not self.plays_bag:
            return self._shared, {}
        from vla_ros.core.policies import make_policy

        times, actions, skipped = read_actions(bag, self.actions_topic, self._space.dim)
        config = {k: v for k, v in self._config.items() if k not in ("recording", "actions", "times")}
        config.update(actions=actions.tolist(), times=times.tolist())
        return make_policy(config, self.robot, source=self.path), dict(skipped)


def json_safe(value):
    """NaN / inf -> None and numpy scalars -> Python, so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def replay_to_directory(bag_path: str | Path, robot: RobotModel, policies: PolicySource, config: ExecutorConfig,
                        options: ReplayOptions, safety: SafetyConfig, out: Path, *,
                        remaps: Mapping[str, str] | None = None, run_info: Mapping[str, object] | None = None,
                        plots: bool = True, progress: Callable[[float], None] | None = None) -> dict:
    """Replay one bag and write out/metrics.json, out/report.md and (with `plots`) the PNGs it links; returns the
    metrics. `run_info` gives metrics["run"] the timing settings as the caller's user gave them (default: from
    `options`, in ms)."""
    from vla_ros.core.replay.metrics import compute_metrics
    from vla_ros.core.replay.plots import write_plots
    from vla_ros.core.replay.report import write_report

    remaps = dict(remaps or {})
    with Bag(bag_path, remaps) as bag:
        policy, action_skips = policies.for_bag(bag)
        record = run_replay(bag, robot, policy, config, options, safety_config=safety, progress=progress)
        metrics = compute_metrics(record)
        for reason, count in action_skips.items():
            metrics["skipped"][f"playback_{reason}"] = count
        space = policy.metadata.action_space
        metrics = {"run": {
            "bag": str(Path(bag_path).resolve()), "storage": bag.storage, "duration_s": bag.duration,
            "messages": bag.message_count, "remaps": remaps, "robot": robot.name, "policy": policy.metadata.name,
            "action_space": f"{space.kind} ({space.frame} frame, {space.rotation}, arms {', '.join(space.arms)})",
            "executor": dataclasses.asdict(config),
            **(run_info or {"latency_ms": options.latency * 1e3, "jitter_ms": options.jitter * 1e3,
                            "seed": options.seed, "measured_latency": options.measured_latency}),
            "instruction": record.notes["instruction"], "instruction_source": record.notes["instruction_source"],
            "cameras": record.notes["cameras"],
            "ignored_joint_state_names": record.notes["ignored_joint_state_names"],
            "messages_with_trailing_bytes": record.notes["messages_with_trailing_bytes"],
            # per camera topic: frames in the bag, frames whose stamp a request read, frames decoded for an
            # observation; only those read were validated (an unusable one is counted in "skipped")
            "camera_frames": record.notes["camera_frames"],
        }, **metrics}
    metrics = json_safe(metrics)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    write_report(metrics, write_plots(record, out) if plots else {}, out)
    return metrics
