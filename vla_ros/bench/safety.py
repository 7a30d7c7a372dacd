"""Safety filter fuzzing: random and adversarial call sequences on every robot, every command re-checked
independently; plus the per-step cost of IK + safety on Franka.

Cases: one case = one `filter` or `tick` call (`--cases` per robot, default 100 000). Calls come in seeded episodes of
EPISODE (400) calls on a fresh filter, each with its own control period (the robot's rate, 250 Hz or 1 kHz, jittered
by 0-30 %) and a mix of target streams: smooth sinusoids inside the range (what IK produces), random walks, jumps
anywhere in and beyond the range, targets at +-1e9, and bad input (NaN, inf, wrong length, unknown or duplicated joint
names, nested lists, empty), besides valid shuffled names and subsets. Time misbehaves on purpose: duplicate stamps,
time going backwards (a little, and by a second: a clock jump), sub-step intervals, gaps of 0.1-0.5 s and of 10 s.
Joint states come from the commanded positions plus noise, sometimes stop for a while (stale), sometimes carry NaN,
extra joints or only some joints; the measured start may be inside the margin band or at a hard limit. The e-stop is
latched mid-motion and reset (resets while the state is stale or the arm is still stopping must be refused).

Violations are counted by `LimitChecker`, which shares no code with the filter beyond the robot model: it
recomputes velocity, acceleration and jerk from consecutive commands as divided differences over their stamps
(v = f[t1, t2], a = 2 f[t0, t1, t2], jerk = 6 f[t0..t3]). For equal spacing these are exactly the backward
differences; for unequal spacing they, unlike backward differences divided by the last interval, stay within the
derivative bounds of any smooth trajectory through the points (the B-spline / Peano form of divided differences).
It checks positions against the configured ranges minus margins (relaxed to the segment's start where that is
outside), FK of each arm's EE against its workspace box (likewise) and the EE linear / angular speed between
consecutive commands, finiteness, repeated stamps (same command), "stopped" = at rest, segments starting at rest,
bad input refused and reported, and that a command with no intervention reported passed the target through (within
the configured tracking tolerance). Tolerances cover floating-point rounding only (relative 1e-6 plus the rounding
of the differences at the smallest interval).

Timing: time.perf_counter around each filter / tick call (garbage collector paused while timing); median and p99
per robot over all fuzz cases, which are adversarial: most of them push against a limit, where the filter searches
(the EE limits with a sampled look-ahead) and costs most. `franka.ik_safety`: one DifferentialIK.step +
SafetyFilter.filter + SafetyFilter.controller_trajectory per 50 Hz tick on a policy-like EE delta stream (see
ik_safety_timing), median / p99 of the tick (`ik_safety_step_*_ms`) and of the safety part alone. Filters run as
safety_node runs them: robots with a trajectory controller (Franka, UR5) keep the trajectory it is sent, and each of
their commands' controller trajectory is checked too (strictly increasing times, the command at controller_delay,
ending at rest).

JSON: {"<robot>": {"cases", "violations", "step_median_ms", "step_p99_ms", "violation_kinds", "examples",
"interventions"}}, and for franka also "ik_safety_step_median_ms", "ik_safety_step_p99_ms", "ik_safety": {...}.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pinocchio as pin

from vla_ros.core.robot import RobotModel, builtin_robot_names, load_robot
from vla_ros.core.safety.independent_check import LimitChecker, controller_trajectory_problems
from vla_ros.core.safety import SafetyConfig, SafetyFilter

EPISODE = 400  # calls per fuzz episode
_WARM_UP = 50  # untimed first IK + safety ticks (first calls into pinocchio / Ruckig allocate)


class Episode:
    """One seeded fuzz episode: drives a fresh filter for EPISODE calls and yields (command, call) pairs."""

    def __init__(self, robot: RobotModel, config: SafetyConfig, rng: np.random.Generator):
        self.robot, self.rng = robot, rng
        self.filter = SafetyFilter(robot, config, keep_trajectory=robot.trajectory_controlled)  # as safety_node
        self.names = list(robot.joint_names)
        self.lower, self.upper = robot.limits.lower, robot.limits.upper
        self.period = float(rng.choice([1.0 / robot.control_rate_hz, 0.004, 0.001]))
        self.jitter = float(rng.choice([0.0, 0.1, 0.3]))
        self.now = float(rng.uniform(0, 1000))
        span = self.upper - self.lower
        start = rng.uniform(self.lower, self.upper)
        roll = rng.random()
        if roll < 0.1:  # start inside the margin band or exactly at a hard limit
            start = np.where(rng.random(robot.nq) < 0.5, self.lower + 0.01 * span * rng.random(robot.nq), start)
        elif roll < 0.15:
            start = np.where(rng.random(robot.nq) < 0.5, self.upper, start)
        self.measured = start
        self.state_pause_until = -math.inf
        self.mode = "smooth"
        self._new_stream()

    def _new_stream(self):
        rng, nq = self.rng, self.robot.nq
        self.mode = str(rng.choice(["smooth", "smooth", "walk", "jumps", "extreme", "bad", "idle"]))
        span = self.upper - self.lower
        self.centre = rng.uniform(self.lower + 0.2 * span, self.upper - 0.2 * span)
        self.amplitude = rng.uniform(0, 0.4, nq) * span * rng.choice([0.05, 0.3, 1.0])
        self.frequency = rng.uniform(0.1, 2.0, nq)
        self.phase = rng.uniform(0, 2 * np.pi, nq)
        self.walk = self.centre.copy()

    def _target(self):
        rng, nq = self.rng, self.robot.nq
        span = self.upper - self.lower
        if self.mode == "smooth":
            return self.centre + self.amplitude * np.sin(self.frequency * self.now + self.phase)
        if self.mode == "walk":
            self.walk = self.walk + rng.normal(0, 0.01, nq) * span
            return self.walk
        if self.mode == "jumps":
            return rng.uniform(self.lower - 0.2 * span, self.upper + 0.2 * span)
        if self.mode == "extreme":
            return rng.choice([-1e9, 1e9, 0.0], nq) + rng.uniform(self.lower, self.upper)
        return self.centre

    def _call(self):
        """Names and positions of one filter() call, sometimes malformed on purpose."""
        rng = self.rng
        names, values = list(self.names), self._target().tolist()
        roll = rng.random()
        if self.mode == "bad" or roll < 0.05:
            kind = rng.integers(12)
            if kind == 0:
                values[rng.integers(len(values))] = float("nan")
            elif kind == 1:
                values[rng.integers(len(values))] = float(rng.choice([np.inf, -np.inf]))
            elif kind == 2:
                values = values[:-1]
            elif kind == 3:
                names[rng.integers(len(names))] = "no_such_joint"
            elif kind == 4:
                names[0] = names[-1]
            elif kind == 5:
                values = values + [0.0]
            elif kind == 6:
                values = [[v] for v in values]
            elif kind == 7:
                values[rng.integers(len(values))] = 10**400  # an int beyond the float range
            elif kind == 8:
                values = (np.asarray(values) + 1j).tolist()
            elif kind == 9:
                values = None
            elif kind == 10:
                names = None
            else:
                names, values = [], []
        elif roll < 0.25:  # shuffled names (valid: mapping is by name)
            order = rng.permutation(len(names))
            names, values = [names[k] for k in order], [values[k] for k in order]
        elif roll < 0.35:  # a subset of the joints
            keep = sorted(rng.choice(len(names), size=int(rng.integers(1, len(names) + 1)), replace=False))
            names, values = [names[k] for k in keep], [values[k] for k in keep]
        return names, values

    def _advance_clock(self):
        rng = self.rng
        roll = rng.random()
        if roll < 0.03:
            dt = 0.0
        elif roll < 0.05:
            dt = -self.period * rng.random()
        elif roll < 0.055:
            dt = -1.0  # clock jump
        elif roll < 0.075:
            dt = float(rng.uniform(1e-7, 3e-4))
        elif roll < 0.09:
            dt = float(rng.uniform(0.1, 0.5))
        elif roll < 0.095:
            dt = 10.0
        else:
            dt = self.period * (1 + self.jitter * rng.uniform(-1, 1))
        self.now += dt

    def _measure(self):
        """Joint state: the last command plus noise (a tracking controller), unless paused or broken."""
        rng, f = self.rng, self.filter
        if self.now < self.state_pause_until:
            return
        if rng.random() < 0.01:
            self.state_pause_until = self.now + rng.uniform(0.05, 0.5)
            return
        last = f.last_command
        if last is not None and last.positions is not None:
            self.measured = last.positions + rng.normal(0, 1e-4, self.robot.nq)
        names, values = list(self.names), self.measured.tolist()
        roll, stamp = rng.random(), self.now
        if roll < 0.02:
            values[rng.integers(len(values))] = float("nan")
        elif roll < 0.025:
            values[rng.integers(len(values))] = 100.0  # impossible: outside every joint's range (refused)
        elif roll < 0.03:
            stamp = None
        elif roll < 0.05:
            names, values = names + ["mimic_joint"], values + [0.0]
        elif roll < 0.1:
            keep = rng.choice(len(names), size=len(names) // 2 + 1, replace=False)
            names, values = [names[k] for k in keep], [values[k] for k in keep]
        f.update_joint_state(names, values, stamp)

    def run(self, timings: list[float]):
        rng, f = self.rng, self.filter
        for k in range(EPISODE):
            if k % 80 == 79:
                self._new_stream()
            self._advance_clock()
            self._measure()
            roll = rng.random()
            if roll < 0.005:
                f.estop("fuzz e-stop" if rng.random() < 0.5 else None)
            elif roll < 0.03 and (f.estopped or rng.random() < 0.1):
                f.reset(self.now if rng.random() < 0.95 else None)  # often refused (stale, moving): the point
            now = self.now if rng.random() > 0.005 else rng.choice([None, math.nan])
            if self.mode == "idle" or rng.random() < 0.3:
                call = None
                start = time.perf_counter()
                command = f.tick(now)
            else:
                call = self._call()
                start = time.perf_counter()
                command = f.filter(call[0], call[1], now)
            timings.append(time.perf_counter() - start)
            yield command, call


def fuzz_robot(robot: RobotModel, cases: int, seed: int, config: SafetyConfig) -> dict:
    rng = np.random.default_rng(seed)
    timings: list[float] = []
    kinds: Counter[str] = Counter()
    examples: list[str] = []
    interventions: Counter[str] = Counter()
    done = 0
    gc.disable()
    try:
        while done < cases:
            episode = Episode(robot, config, rng)
            checker = LimitChecker(robot, config)
            for command, call in episode.run(timings):
                for problem in checker.check(command, call) + controller_trajectory_problems(episode.filter, command):
                    kinds[problem.split(" ")[0]] += 1
                    if len(examples) < 10:
                        examples.append(f"case {done} ({command.state}, {episode.mode}): {problem}")
                done += 1
                if done >= cases:
                    break
            interventions.update({k: v for k, v in episode.filter.intervention_counts().items() if v})
            gc.collect()
    finally:
        gc.enable()
    ms = np.array(timings) * 1e3
    return {"cases": done, "violations": int(sum(kinds.values())), "step_median_ms": float(np.median(ms)),
            "step_p99_ms": float(np.percentile(ms, 99)), "violation_kinds": dict(kinds), "examples": examples,
            "interventions": dict(sorted(interventions.items()))}


def ik_safety_timing(steps: int, seed: int, config: SafetyConfig) -> dict:
    """Per-tick cost of DifferentialIK.step + SafetyFilter.filter + controller_trajectory on Franka for a policy-like
    EE delta stream: a smooth 3-D Lissajous motion of the hand (up to ~0.15 m/s) with a slow yaw, a gripper toggled every 3 s, and a
    chunk boundary every second where the stream jumps by a few millimetres (a new chunk that does not continue
    the previous one). The robot follows the safe command exactly. The first _WARM_UP ticks are not timed."""
    from vla_ros.core.ik import DifferentialIK, EECommand, IKConfig

    robot = load_robot("franka")
    rng = np.random.default_rng(seed)
    ik, safety = DifferentialIK(robot, IKConfig()), SafetyFilter(robot, config, keep_trajectory=True)
    names, dt, now = list(robot.joint_names), 1.0 / robot.control_rate_hz, 0.0
    q = robot.home.copy()
    ik.reset(q)
    safety.update_joint_state(names, q, now)
    safety.tick(now)
    amplitude, frequency = np.array([0.12, 0.15, 0.08]), np.array([0.13, 0.21, 0.17])
    phase = rng.uniform(0, 2 * np.pi, 3)

    def path(t):  # hand offset from its start, and yaw
        return amplitude * (np.sin(2 * np.pi * frequency * t + phase) - np.sin(phase)), 0.3 * np.sin(0.2 * np.pi * t)

    pair, alone = [], []
    gc.disable()
    try:
        for k in range(1, steps + 1):
            now = k * dt
            (x1, yaw1), (x0, yaw0) = path(now), path(now - dt)
            delta = x1 - x0 + (rng.normal(0, 0.002, 3) if k % 50 == 0 else 0.0)
            command = {"arm": EECommand("delta", delta, pin.exp3(np.array([0.0, 0.0, yaw1 - yaw0])), "base",
                                        float((k // 150) % 2))}
            safety.update_joint_state(names, q, now)
            start = time.perf_counter()
            result = ik.step(q, command, dt)
            middle = time.perf_counter()
            out = safety.filter(names, result.q_target, now)
            safety.controller_trajectory()  # what safety_node sends Franka's trajectory controller
            end = time.perf_counter()
            if k > _WARM_UP:
                pair.append(end - start)
                alone.append(end - middle)
            q = out.positions  # the robot follows the command
    finally:
        gc.enable()
    pair_ms, alone_ms = np.array(pair) * 1e3, np.array(alone) * 1e3
    return {"steps": len(pair), "step_median_ms": float(np.median(pair_ms)), "step_p99_ms": float(np.percentile(pair_ms, 99)),
            "safety_median_ms": float(np.median(alone_ms)), "safety_p99_ms": float(np.percentile(alone_ms, 99)),
            "interventions": {k: v for k, v in safety.intervention_counts().items() if v}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--cases", type=int, default=100_000, help="fuzz cases (filter / tick calls) per robot")
    parser.add_argument("--robots", nargs="*", default=None, help="robot names (default: every built-in robot)")
    parser.add_argument("--ik-steps", type=int, default=20_000, help="Franka IK + safety ticks timed (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None, help="a safety YAML (default: config/safety.yaml)")


def main(args: argparse.Namespace) -> int:
    if args.cases < 1 or args.ik_steps < 0:
        print("--cases must be >= 1 and --ik-steps >= 0")
        return 2
    from vla_ros.core.safety.config import default_safety_config_path

    config = SafetyConfig.from_yaml(args.config or default_safety_config_path())
    results = {}
    for k, name in enumerate(args.robots or builtin_robot_names()):
        results[name] = fuzz_robot(load_robot(name), args.cases, args.seed + k, config)
        print(f"{name}: {results[name]['cases']} cases, {results[name]['violations']} violations", flush=True)
    if args.ik_steps:
        timing = ik_safety_timing(args.ik_steps, args.seed, config)
        entry = results.setdefault("franka", {})
        entry.update({"ik_safety_step_median_ms": timing["step_median_ms"],
                      "ik_safety_step_p99_ms": timing["step_p99_ms"], "ik_safety": timing})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


def table(results: dict) -> str:
    lines = [f"{'robot':<10}{'cases':>9}{'violations':>12}{'step median ms':>16}{'step p99 ms':>13}"]
    for name, r in results.items():
        if "cases" in r:
            lines.append(f"{name:<10}{r['cases']:>9}{r['violations']:>12}{r['step_median_ms']:>16.4f}"
                         f"{r['step_p99_ms']:>13.4f}")
    if "ik_safety" in results.get("franka", {}):
        r = results["franka"]["ik_safety"]
        lines.append(f"franka IK + safety per 50 Hz tick ({r['steps']} ticks): median {r['step_median_ms']:.4f} ms, "
                     f"p99 {r['step_p99_ms']:.4f} ms (safety alone: median {r['safety_median_ms']:.4f} ms, "
                     f"p99 {r['safety_p99_ms']:.4f} ms)")
    return "\n".join(lines)
