"""Absolute-pose IK on every robot: vla_ros DifferentialIK.solve vs ikpy and pink, on the same random targets.

Targets (seeded, reproducible): per robot, `--n` samples; sample i belongs to arm i mod (number of arms) (ALOHA's
two arms are reported together, and per arm under "arms"). A sample is the EE pose, in the base frame, of a
configuration drawn uniformly inside the joint position limits, plus a second uniform in-limit configuration as the
start. Every target is therefore reachable within the limits.

Success: the returned configuration is inside the position limits and its EE pose, by pinocchio forward kinematics
of the robot's URDF, is within `--position-tolerance` (1 mm) and `--rotation-tolerance` (0.01 rad, the angle of the
relative rotation) of the target; every solver is judged by this same check, never by its own report.

Timing: time.perf_counter around each solve call alone (one call per sample; the garbage collector is paused
while timing, as timeit does, for every solver alike); one untimed warm-up solve first.

Solvers:
  ours         DifferentialIK.solve with its defaults (seed library of in-limit configurations for the first
               attempt when one is closer to the target than the start, and for restarts).
  single_start DifferentialIK.solve with seed_library_size=0: one attempt from the given start, the conditions the
               peers get.
  ikpy         Chain.from_urdf_file along the URDF path base_frame -> ee_frame with the arm joints active, then
               inverse_kinematics_frame(target, initial_position=start, orientation_mode="all") (its default
               least-squares optimiser, bounded by the URDF limits). Pure Python: slow, so timed on the first
               `--peer-n` samples.
  pink         Configuration(model, data, start) on the same pinocchio model; FrameTask(position_cost=1,
               orientation_cost=1) + PostureTask(cost=1e-3, home) solved by solve_ik(solver=daqp) with pink's default
               configuration and velocity limits, dt = 1 s (each call is then a full Gauss-Newton step under the
               limits: the fastest convergence), integrated until the same tolerance or `--pink-iterations`.
               Also on the first `--peer-n` samples.
Each peer entry reports `speedup`: the peer's median time over ours on the same samples.

Streaming ("step"): the per-tick cost of the IK node's work, ee_commands_from_action + DifferentialIK.step, for
`--step-n` ticks at the robot's control rate from home with perfect tracking; every arm gets a Bridge-style action
(random base-frame delta up to half its EE speed limit per tick, rpy rotation, gripper) each tick.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import numpy as np
import pinocchio as pin

from vla_ros.core.ik import DifferentialIK, IKConfig, ee_commands_from_action
from vla_ros.core.robot import ArmSpec, RobotModel, builtin_robot_names, load_robot
from vla_ros.core.types import ActionSpace, GripperConvention

PEERS = ("ikpy", "pink")
# A solver maps (sample index) -> full q (robot.joint_names order).
Solver = Callable[[int], np.ndarray]


class Samples:
    """Seeded random reachable targets for one robot: per sample an arm, a start q and a target pose (base frame)."""

    def __init__(self, robot: RobotModel, count: int, seed: int):
        rng = np.random.default_rng(seed)
        self.arms = [robot.arms[i % len(robot.arms)] for i in range(count)]
        goals = robot.random_configurations(count, rng)
        self.starts = robot.random_configurations(count, rng)
        self.targets = [robot.fk(q, arm.ee_frame_id) for q, arm in zip(goals, self.arms)]


def pose_errors(robot: RobotModel, q: np.ndarray, arm: ArmSpec, target: pin.SE3) -> tuple[float, float]:
    delta = robot.fk(q, arm.ee_frame_id).actInv(target)
    return float(np.linalg.norm(delta.translation)), float(np.linalg.norm(pin.log3(delta.rotation)))


def evaluate(robot: RobotModel, samples: Samples, solve: Solver, count: int, tolerances: tuple[float, float]) -> dict:
    """Time `solve` on the first `count` samples and judge every answer by the same FK check."""
    solve(0)  # warm-up: lazy initialisation (seed library, JIT) is not a solve
    times, successes = np.empty(count), np.zeros(count, dtype=bool)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(count):
            start = time.perf_counter()
            q = solve(i)
            times[i] = time.perf_counter() - start
            in_limits = bool(np.all(q >= robot.limits.lower) and np.all(q <= robot.limits.upper))
            position_error, rotation_error = pose_errors(robot, q, samples.arms[i], samples.targets[i])
            successes[i] = in_limits and position_error <= tolerances[0] and rotation_error <= tolerances[1]
    finally:
        if gc_was_enabled:
            gc.enable()
    return {"times": times, "successes": successes}


def summary(raw: dict, arms: list[ArmSpec] | None = None) -> dict:
    times_ms, successes = raw["times"] * 1e3, raw["successes"]
    result = {
        "n": int(len(times_ms)),
        "success_rate": float(successes.mean()),
        "median_ms": float(np.median(times_ms)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "mean_ms": float(times_ms.mean()),
    }
    names = sorted({arm.name for arm in arms or []})
    if len(names) > 1:
        result["arms"] = {}
        for name in names:
            mask = np.array([arm.name == name for arm in arms[: len(times_ms)]])
            result["arms"][name] = summary({"times": raw["times"][mask], "successes": successes[mask]})
    return result


# --- solvers ------------------------------------------------------------------------------------------------------


def ours(robot: RobotModel, samples: Samples, config: IKConfig, tolerances: tuple[float, float],
         iterations: list[int]) -> Solver:
    """DifferentialIK.solve; appends each call's iteration count to `iterations`."""
    ik = DifferentialIK(robot, config)

    def solve(i: int) -> np.ndarray:
        result = ik.solve(samples.starts[i], {samples.arms[i].name: samples.targets[i]},
                          position_tolerance=tolerances[0], rotation_tolerance=tolerances[1])
        iterations.append(result.iterations)
        return result.q_target

    return solve


def urdf_path_elements(robot: RobotModel, arm: ArmSpec) -> list[str]:
    """[base link, joint, link, ..., ee link]: the URDF path ikpy must follow from the base frame to the EE frame."""
    root = ET.parse(robot.urdf_path).getroot()
    parent_of = {j.find("child").get("link"): (j.get("name"), j.find("parent").get("link")) for j in root.iter("joint")}
    elements, link = [arm.ee_frame], arm.ee_frame
    while link != robot.base_frame:
        if link not in parent_of:
            raise ValueError(f"{robot.urdf_path}: no joint path from {robot.base_frame!r} to {arm.ee_frame!r}")
        joint, link = parent_of[link]
        elements += [joint, link]
    return elements[::-1]


def ikpy_solver(robot: RobotModel, samples: Samples) -> Solver:
    from ikpy.chain import Chain

    chains = {}
    for arm in robot.arms:
        elements = urdf_path_elements(robot, arm)
        joints = elements[1::2]
        mask = [False] + [name in arm.joints for name in joints]  # ikpy prepends an origin link
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ikpy warns about every fixed joint in the path
            chain = Chain.from_urdf_file(str(robot.urdf_path), base_elements=elements, active_links_mask=mask)
        columns = np.array(mask)
        order = [joints.index(name) + 1 for name in arm.joints]  # chain position of each arm joint, in arm order
        check_chain(robot, arm, chain, order)
        chains[arm.name] = (chain, columns, order)

    def solve(i: int) -> np.ndarray:
        arm = samples.arms[i]
        chain, columns, order = chains[arm.name]
        initial = np.zeros(len(columns))
        initial[order] = samples.starts[i][arm.index]
        solution = chain.inverse_kinematics_frame(samples.targets[i].homogeneous, initial_position=initial,
                                                  orientation_mode="all")
        q = samples.starts[i].copy()
        q[arm.index] = solution[order]
        return q

    return solve


def check_chain(robot: RobotModel, arm: ArmSpec, chain, order: list[int]) -> None:
    """The ikpy chain must compute the same FK as pinocchio, or the comparison is meaningless."""
    rng = np.random.default_rng(0)
    for q in robot.random_configurations(5, rng):
        angles = np.zeros(len(chain.links))
        angles[order] = q[arm.index]
        gap = np.abs(chain.forward_kinematics(angles) - robot.fk(q, arm.ee_frame_id).homogeneous).max()
        if gap > 1e-9:
            raise RuntimeError(f"ikpy chain for {robot.name}/{arm.name} disagrees with pinocchio FK by {gap:.3g}")


def pink_solver(robot: RobotModel, samples: Samples, tolerances: tuple[float, float], max_iterations: int) -> Solver:
    import pink
    from pink.tasks import FrameTask, PostureTask

    logging.getLogger("pink").setLevel(logging.ERROR)  # it logs every start that touches a limit
    base_id = robot.model.getFrameId(robot.base_frame)
    data = robot.new_data()
    pin.framesForwardKinematics(robot.model, data, pin.neutral(robot.model))
    world_from_base = data.oMf[base_id].copy()

    def solve(i: int) -> np.ndarray:
        arm, target = samples.arms[i], world_from_base * samples.targets[i]
        configuration = pink.Configuration(robot.model, robot.new_data(), samples.starts[i])
        task = FrameTask(arm.ee_frame, position_cost=1.0, orientation_cost=1.0)
        task.set_target(target)
        posture = PostureTask(cost=1e-3)
        posture.set_target(robot.home)
        for _ in range(max_iterations):
            delta = configuration.get_transform_frame_to_world(arm.ee_frame).actInv(target)
            if (np.linalg.norm(delta.translation) <= tolerances[0]
                    and np.linalg.norm(pin.log3(delta.rotation)) <= tolerances[1]):
                break
            velocity = pink.solve_ik(configuration, [task, posture], 1.0, solver="daqp", safety_break=False)
            configuration.integrate_inplace(velocity, 1.0)
        return configuration.q.copy()

    return solve


def stream(robot: RobotModel, ticks: int, seed: int) -> dict:
    """Time action -> joint target per control tick (see the module docstring)."""
    rng = np.random.default_rng(seed)
    dt = 1.0 / robot.control_rate_hz
    names = [arm.name for arm in robot.arms]
    grippers = all(arm.gripper for arm in robot.arms)
    space = ActionSpace("ee_delta", arms=tuple(names), frame="base", rotation="rpy",
                        gripper=GripperConvention() if grippers else None)
    # per arm: delta xyz, delta rpy, then the gripper opening if any
    low = np.concatenate([np.r_[np.full(3, -arm.max_ee_linear_speed), np.full(3, -arm.max_ee_angular_speed)] * 0.5 * dt
                          for arm in robot.arms])
    low = low.reshape(len(names), 6)
    high = -low
    if grippers:
        low, high = np.c_[low, np.zeros(len(names))], np.c_[high, np.ones(len(names))]
    actions = rng.uniform(low.ravel(), high.ravel(), (ticks + 1, space.dim))
    ik = DifferentialIK(robot)
    q = robot.home.copy()
    ik.reset(q)
    ik.step(q, ee_commands_from_action(space, actions[-1], names), dt)  # warm-up
    times = np.empty(ticks)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(ticks):
            start = time.perf_counter()
            q = ik.step(q, ee_commands_from_action(space, actions[i], names), dt).q_target
            times[i] = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    times_us = times * 1e6
    return {"n": ticks, "median_us": float(np.median(times_us)), "p99_us": float(np.percentile(times_us, 99)),
            "max_us": float(times_us.max())}


# --- run ----------------------------------------------------------------------------------------------------------


def run_robot(robot: RobotModel, args: argparse.Namespace) -> dict:
    tolerances = (args.position_tolerance, args.rotation_tolerance)
    samples = Samples(robot, args.n, args.seed)
    iterations: list[int] = []
    ours_raw = evaluate(robot, samples, ours(robot, samples, IKConfig(), tolerances, iterations), args.n, tolerances)
    result = summary(ours_raw, samples.arms)
    counts = np.array(iterations[1:])  # without the warm-up solve
    result["iterations"] = {"median": float(np.median(counts)), "p99": float(np.percentile(counts, 99)),
                            "max": int(counts.max())}
    single = ours(robot, samples, IKConfig(seed_library_size=0), tolerances, [])
    result["single_start"] = summary(evaluate(robot, samples, single, args.n, tolerances))
    peer_n = min(args.peer_n, args.n)
    result["peers"] = {}
    for peer in args.peers:
        solver = ikpy_solver(robot, samples) if peer == "ikpy" else pink_solver(robot, samples, tolerances,
                                                                                 args.pink_iterations)
        entry = summary(evaluate(robot, samples, solver, peer_n, tolerances))
        entry["speedup"] = entry["median_ms"] / float(np.median(ours_raw["times"][:peer_n]) * 1e3)
        result["peers"][peer] = entry
    result["step"] = stream(robot, args.step_n, args.seed)
    result["settings"] = {
        "position_tolerance_m": tolerances[0],
        "rotation_tolerance_rad": tolerances[1],
        "seed": args.seed,
        "peer_n": peer_n,
        "pink_max_iterations": args.pink_iterations,
        "timing": "time.perf_counter per solve call, garbage collector paused while timing, after one warm-up solve",
        # Tail latencies are only as good as the machine was quiet: record how busy it was.
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    return result


def table(results: dict) -> str:
    header = (f"{'robot':<8}{'n':>7}{'success':>10}{'median ms':>11}{'p99 ms':>9}{'1-start ok':>12}{'1-start ms':>12}"
              + "".join(f"{peer + ' ok':>11}{peer + ' ms':>11}{'x':>7}" for peer in PEERS)
              + f"{'step p50 us':>13}{'step p99 us':>13}")
    lines = [header]
    for name, r in results.items():
        line = (f"{name:<8}{r['n']:>7}{100 * r['success_rate']:>9.2f}%{r['median_ms']:>11.3f}{r['p99_ms']:>9.3f}"
                f"{100 * r['single_start']['success_rate']:>11.2f}%{r['single_start']['median_ms']:>12.3f}")
        for peer in PEERS:
            p = r["peers"].get(peer)
            line += (f"{100 * p['success_rate']:>10.2f}%{p['median_ms']:>11.2f}{p['speedup']:>6.0f}x" if p
                     else f"{'-':>11}{'-':>11}{'-':>7}")
        line += f"{r['step']['median_us']:>13.1f}{r['step']['p99_us']:>13.1f}"
        lines.append(line)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--robots", nargs="+", default=None,
                        help="built-in names or YAML paths (default: all built-ins)")
    parser.add_argument("--n", type=int, default=10_000, help="targets per robot")
    parser.add_argument("--peer-n", type=int, default=500, help="targets (the first ones) the slow peers are timed on")
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS, help="peer solvers to run")
    parser.add_argument("--pink-iterations", type=int, default=100, help="pink's iteration cap per target")
    parser.add_argument("--step-n", type=int, default=5000, help="control ticks of the streaming-step timing")
    parser.add_argument("--position-tolerance", type=float, default=1e-3, help="success threshold, m")
    parser.add_argument("--rotation-tolerance", type=float, default=1e-2, help="success threshold, rad")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    if min(args.n, args.peer_n, args.pink_iterations, args.step_n) < 1:
        print("--n, --peer-n, --pink-iterations and --step-n must be >= 1")
        return 2
    results = {}
    for name in args.robots or builtin_robot_names():
        robot = load_robot(name)
        results[robot.name] = run_robot(robot, args)
        print(f"{robot.name}: done", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0
