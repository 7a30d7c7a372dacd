"""Simulated robot: scene build time, camera render rate per robot (each configured camera at its own resolution
and at 224x224), joint placement cost and joint-tracker cost per servo tick and per 50 Hz control period."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from vla_ros.core.sim.scene import SimScene  # first: selects EGL before anything imports mujoco
from vla_ros.core.robot import builtin_robot_names, load_robot
from vla_ros.core.sim.tracker import JointTracker

POLICY_SIZE = (224, 224)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument("--robots", nargs="+", default=None, help="robot names or YAML paths (default: built-ins)")
    parser.add_argument("--frames", type=int, default=100, help="frames timed per camera and size (default 100)")


def _render_rate(scene: SimScene, camera: str, size: tuple[int, int], frames: int) -> dict:
    """Frames/s of set_joint_positions + render while the arm sweeps (a static scene would flatter nothing, but
    a moving one is what the sim node draws)."""
    robot = scene.robot
    sweep = robot.home + 0.2 * np.sin(np.linspace(0, 2 * np.pi, frames))[:, None]
    sweep = np.clip(sweep, robot.limits.lower, robot.limits.upper)
    scene.render(camera, *size)  # create the renderer outside the timing
    times = np.empty(frames)
    for i, q in enumerate(sweep):
        start = time.perf_counter()
        scene.set_joint_positions(q)
        scene.render(camera, *size)
        times[i] = time.perf_counter() - start
    scene.set_joint_positions(robot.home)
    return {"camera": camera, "width": size[0], "height": size[1], "fps": round(frames / times.sum(), 1),
            "p50_ms": round(1e3 * float(np.median(times)), 3),
            "p95_ms": round(1e3 * float(np.percentile(times, 95)), 3)}


def _tracker_cost(robot, periods: int = 250) -> dict:
    """µs per 20 ms control period (a command and a step, 20 servo ticks) while tracking a moving set-point."""
    tracker = JointTracker(robot)
    period = 0.02
    targets = np.clip(robot.home + 0.3 * np.sin(np.arange(periods) * period * 2.0)[:, None],
                      robot.limits.lower, robot.limits.upper)
    start = time.perf_counter()
    for k, target in enumerate(targets):
        tracker.command(target, k * period)
        tracker.step((k + 1) * period)
    elapsed = time.perf_counter() - start
    ticks = round(period / tracker.config.substep)
    return {"step_20ms_us": round(1e6 * elapsed / periods, 1), "tick_us": round(1e6 * elapsed / periods / ticks, 2)}


def _placement_cost(scene: SimScene, repeats: int = 2000) -> float:
    q = scene.robot.home
    start = time.perf_counter()
    for _ in range(repeats):
        scene.set_joint_positions(q)
    return round(1e6 * (time.perf_counter() - start) / repeats, 2)


def _gl_renderer() -> str:
    """The OpenGL renderer the last render used (llvmpipe = software): FPS figures mean nothing without it."""
    try:
        from OpenGL import GL

        return " / ".join(GL.glGetString(name).decode() for name in (GL.GL_RENDERER, GL.GL_VERSION))
    except Exception as exc:  # a benchmark footnote, never a reason to fail the run
        return f"unknown ({type(exc).__name__})"


def main(args: argparse.Namespace) -> int:
    import mujoco

    results = {"bench": "sim", "frames": args.frames, "robots": {}}
    gl = "not rendered"
    for name in args.robots or builtin_robot_names():
        robot = load_robot(name)
        start = time.perf_counter()
        scene = SimScene(robot)
        build_ms = round(1e3 * (time.perf_counter() - start), 1)
        renders = []
        for camera in robot.cameras:
            for size in ((camera.width, camera.height), POLICY_SIZE):
                renders.append(_render_rate(scene, camera.name, size, args.frames))
        gl = _gl_renderer() if renders else gl
        results["robots"][robot.name] = {
            "build_ms": build_ms, "set_joint_positions_us": _placement_cost(scene),
            "tracker": _tracker_cost(robot), "render": renders,
        }
        scene.close()
    results["environment"] = {
        "mujoco": mujoco.__version__, "MUJOCO_GL": os.environ.get("MUJOCO_GL"), "gl_renderer": gl,
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # software rendering shares the CPU with everything else
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    _print_table(results)
    return 0


def _print_table(results: dict) -> None:
    env = results["environment"]
    print(f"renderer: {env['gl_renderer']} (MUJOCO_GL={env['MUJOCO_GL']}), {env['cpu_count']} CPUs, "
          f"load average {env['load_average_1min']}")
    print(f"{'robot':<10}{'camera':<17}{'size':>10}{'fps':>9}{'p50 ms':>9}{'p95 ms':>9}")
    for name, robot in results["robots"].items():
        for r in robot["render"]:
            print(f"{name:<10}{r['camera']:<17}{r['width']:>5}x{r['height']:<4}{r['fps']:>9.1f}{r['p50_ms']:>9.2f}"
                  f"{r['p95_ms']:>9.2f}")
    print(f"{'robot':<10}{'build ms':>10}{'set q us':>10}{'tracker 20 ms step us':>24}{'tick us':>9}")
    for name, robot in results["robots"].items():
        tracker = robot["tracker"]
        print(f"{name:<10}{robot['build_ms']:>10.1f}{robot['set_joint_positions_us']:>10.2f}"
              f"{tracker['step_20ms_us']:>24.1f}{tracker['tick_us']:>9.2f}")
