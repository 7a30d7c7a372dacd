"""What a JointTrajectoryController is asked to execute, whatever the spacing of the safety node's calls.

The safety filter's commands for a target that jumps between home and home + 1 rad on joints 1 and 4 (every 0.5 s)
go to a model of ros2_control's JTC (core.sim.trajectory_controller: spline interpolation, a new message replaces
the old one), sampled every millisecond, under call schedules the safety node really sees: regular 50 Hz, calls
1.5 periods apart ("hold timer": where the audit found its hold timer; it now fires after the controller delay, 2
periods), 30 % jitter, a 0.3 s gap and a 0.2 s stall. Each is run twice: with what the safety node sends
(core.safety.controller_trajectory: the filter's own trajectory, controller_delay late, then its stop) and, as the
peer, with the design it replaced (each command as a one-point trajectory reached one control period after
receipt). Reported per robot and schedule: the largest executed joint velocity and acceleration and EE linear speed,
as ratios to their limits (finite differences of the millisecond samples: what the arm is asked to do).
JSON: {robot: {schedule: {"sent": {...}, "one_point": {...}}}}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PERIOD = 0.02
SCHEDULES = ("regular", "hold timer", "jitter", "gap", "stall")


def schedule(kind: str, rng: np.random.Generator, count: int = 120) -> list[float]:
    """Call times of one schedule (see the module docstring)."""
    times, t = [], 0.0
    for k in range(count):
        t += {"regular": PERIOD, "hold timer": 1.5 * PERIOD, "jitter": PERIOD * rng.uniform(0.7, 1.3),
              "gap": 0.3 if k == 40 else PERIOD, "stall": 0.2 if k == 40 else PERIOD}[kind]
        times.append(t)
    return times


def execute(robot, kind: str, one_point: bool = False, seed: int = 0) -> dict:
    """Play schedule `kind` through a SafetyFilter into the JTC model. Returns the filter, its commands, the
    controller's millisecond samples (stamps, positions, velocities, accelerations) and `errors`: how far the
    controller is from each command a controller_delay after it (sent trajectories only)."""
    from vla_ros.core.safety import SafetyFilter
    from vla_ros.core.sim.trajectory_controller import TrajectoryController

    names = list(robot.joint_names)
    f = SafetyFilter(robot, keep_trajectory=True)
    controller = TrajectoryController(robot.home)
    f.update_joint_state(names, robot.home, 0.0)
    f.tick(0.0)
    target = robot.home.copy()
    target[0] += 1.0
    target[3] += 1.0
    commands, samples, errors, due, sampled = [], [], [], [], 0  # sampled: milliseconds sampled so far

    def sample_until(end: float) -> None:  # the controller's state on the millisecond grid up to `end`
        nonlocal sampled
        while sampled * 1e-3 < end:
            samples.append((sampled * 1e-3, *controller.sample(sampled * 1e-3)))
            sampled += 1

    for t in schedule(kind, np.random.default_rng(seed)):
        sample_until(t)
        errors += [float(np.abs(controller.sample(at)[0] - q).max()) for at, q in due if at < t]
        due = [(at, q) for at, q in due if at >= t]
        f.update_joint_state(names, controller.sample(t)[0], t)
        command = f.filter(names, target if int(t / 0.5) % 2 == 0 else robot.home, t)
        commands.append(command)
        if one_point:
            controller.receive(t, [PERIOD], [command.positions])
        else:
            sent = f.controller_trajectory()
            controller.receive(t, sent.times, sent.positions, sent.velocities, sent.accelerations, start=sent.stamp)
            due.append((command.stamp + f.controller_delay, command.positions))
    sample_until(t + 1.0)
    stamps = np.array([s[0] for s in samples])
    positions, velocities, accelerations = (np.array([s[k] for s in samples]) for k in (1, 2, 3))
    return {"filter": f, "commands": commands, "stamps": stamps, "positions": positions, "velocities": velocities,
            "accelerations": accelerations, "errors": errors}


def ratios(robot, run: dict) -> dict:
    """Largest executed joint velocity, acceleration (finite differences of the samples) and EE linear speed of
    every arm, each over its limit."""
    f, stamps, positions = run["filter"], run["stamps"], run["positions"]
    dt = np.diff(stamps)[:, None]
    velocity = np.diff(positions, axis=0) / dt
    acceleration = np.diff(velocity, axis=0) / dt[1:]
    ee = 0.0
    for arm in robot.arms:
        points = np.array([robot.fk(q, arm.ee_frame_id).translation for q in positions])
        ee = max(ee, float((np.linalg.norm(np.diff(points, axis=0), axis=1) / dt[:, 0]).max())
                 / arm.max_ee_linear_speed)
    return {"joint_velocity": round(float(np.abs(velocity / f.limits.velocity).max()), 4),
            "joint_acceleration": round(float(np.abs(acceleration / f.limits.acceleration).max()), 4),
            "ee_linear_speed": round(ee, 4)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--robots", nargs="*", default=["franka", "ur5"], help="robots (JTC-driven: franka, ur5)")


def main(args: argparse.Namespace) -> int:
    from vla_ros.core.robot import load_robot

    results = {}
    for name in args.robots:
        robot = load_robot(name)
        results[name] = {kind: {"sent": ratios(robot, execute(robot, kind)),
                                "one_point": ratios(robot, execute(robot, kind, one_point=True))}
                         for kind in SCHEDULES}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print("executed / limit: joint velocity, joint acceleration, EE linear speed -- sent trajectory vs one point")
    for name, by_kind in results.items():
        for kind, row in by_kind.items():
            sent, old = row["sent"], row["one_point"]
            print(f"{name:<7}{kind:<12}" + "  ".join(f"{key.replace('_', ' ')} {sent[key]:.2f} vs {old[key]:.2f}"
                                                      for key in sent))
    return 0
