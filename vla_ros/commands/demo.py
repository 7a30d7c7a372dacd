"""`vla-ros demo [--robot R] [--duration S] [--summary OUT.json] [--out DIR]`: the whole chain on a simulated robot.

sim_node (MuJoCo cameras + a joint tracker, obeying the robot's real controller topics) -> policy_node (the
colour-target servo baseline, a classical controller, not a VLA) -> action-chunk executor -> ik_node ->
safety_node -> controller topics -> sim_node, over real rclpy / Fast DDS on loopback. Each node is its own process,
as with the console scripts and the launch file, except policy_node, which runs in the demo's (the demo reads its
chunks and joint state); demo_recorder listens like a rosbag recorder (ros/node_process.py says why processes). The
safety node's sent commands come back in its report and are re-checked here by the independent checker. Prints a
summary and writes a joints plot, camera frames with the predicted chunk drawn on them, the recording, the nodes'
reports (*.npz) and summary.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from vla_ros.core.errors import ConfigError, VlaRosError

REACH_THRESHOLD = 0.02  # m: the task check, EE within 2 cm of the target's centre


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="franka", help="franka (default), widowx, ur5, aloha, or a robot YAML")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    parser.add_argument("--out", type=Path, help="output directory (default out/demo-<robot>)")
    parser.add_argument("--summary", type=Path, help="also write the summary JSON here")
    parser.add_argument("--seed", type=int, default=0, help="where the simulated target is placed")
    parser.add_argument("--frames", type=int, default=4, help="camera frames to save with the chunk drawn on them")
    parser.add_argument("--niceness", type=int, default=-10,
                        help="run the graph at this priority when permitted (default -10; 0 = unchanged)")
    parser.add_argument("--cpu-load", action="store_true",
                        help="run with every core busy (the CPU hog of `vla-ros bench ros-latency --load`)")


def _controller_override(robot) -> str:
    """Float64MultiArray on the configured topics when a controller's message package is not importable here."""
    from vla_ros.ros.controllers import ControllerInterfaceError, make_adapters

    try:
        make_adapters(robot)
        return ""
    except ControllerInterfaceError as exc:
        print(f"note: {exc}\n      -> the demo publishes std_msgs/Float64MultiArray on the configured topics instead")
        return "float64_multi_array"


def _baseline(robot):
    """The baseline policy, told the height of the simulated target's centre and asked to reach it."""
    from vla_ros.core.config import load_yaml
    from vla_ros.core.policies import make_policy, resolve_policy_config
    from vla_ros.core.sim.placement import target_height
    from vla_ros.core.sim.scene import TARGET_RADIUS

    path = resolve_policy_config("baseline")
    config = load_yaml(path)
    config["target_z"] = target_height(robot.arms[0], 0.0, TARGET_RADIUS)
    config["approach_height"] = 0.01  # 1 cm above the centre: inside the 2 cm check, clear of the workspace floor
    return make_policy(config, robot, source=path)


def _sim_target(robot, seed: int):
    """(the target's centre, the arm to reach it with) as the sim places it for `seed`; the sim is then given the
    point itself, so both processes agree on it by construction."""
    from vla_ros.core.sim.scene import SimScene

    with SimScene(robot, seed=seed, cameras=[]) as scene:
        return scene.target_position(), robot.arm(scene.target_arm)


def main(args: argparse.Namespace) -> int:
    if not args.duration > 0:
        raise ConfigError("--duration", "", f"expected a positive number of seconds, got {args.duration}")
    if args.cpu_load:
        from vla_ros.cpu_load import cpu_load

        with cpu_load(limit_s=args.duration + 120.0) as hogs:
            print(f"demo: {len(hogs)} busy loops keep every core loaded")
            return _run(args)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    import rclpy

    from vla_ros.core import demo_report
    from vla_ros.core.demo_recording import Recording
    from vla_ros.core.robot import load_robot
    from vla_ros.core.safety.independent_check import LimitChecker
    from vla_ros.ros import params
    from vla_ros.ros.base import now_sec
    from vla_ros.ros.bringup import Graph, start_graph, summary
    from vla_ros.ros.controllers import make_adapters
    from vla_ros.ros.diagnostics import DiagnosticsListener

    robot = load_robot(args.robot)
    out = args.out or Path("out") / f"demo-{robot.name}"
    out.mkdir(parents=True, exist_ok=True)
    override = _controller_override(robot)
    adapters = make_adapters(robot, override)
    policy = _baseline(robot)
    target, arm = _sim_target(robot, args.seed)
    # what each child writes when it stops
    files = {"demo_recorder": out / "recording.npz", "safety_node": out / "safety_node.npz",
             "ik_node": out / "ik_node.npz"}
    for path in files.values():
        path.unlink(missing_ok=True)
    params.use_fastdds_profile()
    if note := params.raise_priority(args.niceness):  # before the children start: they inherit the priority
        print(note)
    sim, recorder, safety, ik = _children(args, {"robot": args.robot, "controller_interface_override": override},
                                          files, target, policy.metadata.action_space.is_ee)
    control = [child for child in (safety, ik) if child]  # stopped in this order: safety_node first
    children = [sim, recorder, *control]
    with contextlib.ExitStack() as running:
        for child in children:
            running.enter_context(child)  # started now, stopped (in reverse) on leaving, whatever happens
        context = rclpy.Context()
        rclpy.init(args=["--ros-args", "--params-file", str(params.nodes_params_file())], context=context)
        # spun from now on, and shut down with the graph once there is one
        listening = Graph(context, None, None, None, None)
        watch = DiagnosticsListener(context=context)
        listening.add_node(watch)
        graph = None
        try:
            _wait_until_ready(watch, safety, ik, recorder, adapters[0].topic)
            # its start-up check waits for its own subscription's first joint states
            graph = start_graph(args.robot, "baseline", controller_interface=override, policy_object=policy,
                                context=context, overrides={"contract_check_wait": 60.0}, policy_only=True)
            graph.nodes += listening.nodes
            graph.spinners += listening.spinners
            safety.wait_until(lambda: watch.count("vla_ros/safety_node", "targets") > 0, 60.0,
                              "targets from the policy (on /diagnostics)")
            print(f"demo: {robot.name} reaching for the red target at {np.round(target, 3).tolist()} "
                  f"for {args.duration:g} s (pids: " + ", ".join(f"{c.name} {c.process.pid}" for c in children) + ")")
            distances, started, duration = _drive(args.duration, graph, children, robot, arm, target)
            ended = now_sec(graph.policy)
            # the control nodes stop first, while the policy still runs: the holds they count are the run's own
            exit_codes = {child.name: child.stop() for child in control}
            run = summary(graph, duration)
            # chunks adopted during the run: before it the recorder may not yet have heard the commands
            adoptions = [(tick, stamp) for tick, stamp in graph.policy.adoptions if tick >= started]
        finally:
            (graph if graph is not None else listening).shutdown()
        exit_codes.update({child.name: child.stop() for child in (recorder, sim)})
    reports = _reports(children, control, files, exit_codes, run)
    safety_report = reports["safety_node"]
    recording = Recording.load(files["demo_recorder"])
    final_distance = distances[-1]

    checker = LimitChecker(robot, safety_report.safety_config)
    violations = sum(len(checker.check(command)) for command in safety_report.sent)
    command_times, command_q = recording.command_times, recording.command_q
    latencies = demo_report.camera_to_command_latencies(adoptions, command_times)
    start = command_times[0] if len(command_times) else 0.0
    outputs = []
    if len(command_times) and len(recording.measured_times):
        outputs.append(demo_report.plot_commanded_vs_measured(out / "joints.png", robot, (command_times, command_q),
                                                              (recording.measured_times, recording.measured_q), start))
    # the recorder ran from before the graph's start-up to after it stopped: the frames of the run itself
    snapshots = [s for s in recording.snapshots if s.stamp >= started][:args.frames]
    outputs += _save_frames(out, robot, recording, snapshots, target, demo_report)
    safety_summary = run["safety_node"]
    arm_times = recording.arm_command_times
    result = {
        "robot": robot.name,
        "policy": policy.metadata.name,
        "duration_s": round(duration, 2),
        "ticks": run["policy_node"]["executor"]["ticks"],
        "commands": len(command_times),
        "command_rate_hz": int(np.count_nonzero((arm_times >= started) & (arm_times <= ended))) / duration,
        "controller_topics": [a.topic for a in adapters],
        "controller_interface_override": override or None,
        "latency_p50_ms": demo_report.percentile_ms(latencies, 50),
        "latency_p99_ms": demo_report.percentile_ms(latencies, 99),
        "latency_chunks": len(latencies),
        "interventions": safety_summary["interventions"],
        "cpu_load": bool(args.cpu_load),
        # Hold commands: the safety node's timer found no target for a controller delay (late targets), during the run
        # and before it (from the policy's first target to the run's start); idle ticks: its timer before the first
        # target (anchored, waiting for the policy).
        "safety_hold_ticks": int(np.count_nonzero(safety_report.hold_times >= started)),
        "safety_startup_hold_ticks": int(np.count_nonzero(safety_report.hold_times < started)),
        "safety_idle_ticks": safety_summary["idle_ticks"],
        "safety_mode_changes": safety_summary["mode_changes"],
        "checked_commands": len(safety_report.sent),
        "violations": violations,
        "target": np.round(target, 4).tolist(),
        "final_distance_m": round(final_distance, 4),
        "min_distance_m": round(min(distances), 4),
        "reach_threshold_m": REACH_THRESHOLD,
        "target_reached": bool(final_distance <= REACH_THRESHOLD),
        "graph": run,
    }
    summary_path = out / "summary.json"
    result["outputs"] = [str(p) for p in [*outputs, *files.values(), summary_path] if p.exists() or p == summary_path]
    text = json.dumps(result, indent=2, default=str) + "\n"
    summary_path.write_text(text)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(text)
    print(demo_report.format_summary(result))
    return 0 if result["target_reached"] and violations == 0 else 1


def _children(args, common: dict, files: dict[str, Path], target, is_ee: bool):
    """sim_node, demo_recorder, safety_node and (EE policies) ik_node as processes, not yet started."""
    from vla_ros.ros import params
    from vla_ros.ros.node_process import NodeProcess

    nodes_file = params.nodes_params_file()
    sim = NodeProcess("vla_ros.ros.sim_node", {**common, "target_xyz": target.tolist()}, nodes_file)
    # an observer, like a rosbag recorder: at normal priority, never ahead of the control path
    recorder = NodeProcess("vla_ros.ros.recorder", {**common, "recording": str(files["demo_recorder"].resolve()),
                                                    "snapshot_period": args.duration / (args.frames + 1)},
                           niceness=max(0, os.getpriority(os.PRIO_PROCESS, 0)), node_name="demo_recorder")
    safety = NodeProcess("vla_ros.ros.safety_node", {**common, "report": str(files["safety_node"].resolve()),
                                                     "sent_history": args.duration + 60.0}, nodes_file)
    ik = NodeProcess("vla_ros.ros.ik_node", {**common, "report": str(files["ik_node"].resolve())}, nodes_file) \
        if is_ee else None
    return sim, recorder, safety, ik


def _wait_until_ready(watch, safety, ik, recorder, arm_topic: str) -> None:
    """Until every child is up and hears what it needs: the safety node anchored on the sim's joint states (a stall
    at start-up may have stopped it since: still anchored), the IK node has them, the recorder hears the safety
    node's commands (DDS matches endpoints pair by pair: only a node itself can tell what it hears). Read from
    /diagnostics. Starting the policy while four processes still imported and discovered each other delayed its
    first targets by up to 0.35 s (hold ticks)."""
    safety.wait_until(lambda: watch.value("vla_ros/safety_node", "mode") in ("tracking", "stopping"), 60.0,
                      "anchor on the joint states (on /diagnostics)")
    if ik:
        ik.wait_until(lambda: watch.value("vla_ros/ik_node", "joint_states_fresh") == "True", 60.0,
                      "fresh joint states (on /diagnostics)")
    recorder.wait_until(lambda: watch.count("vla_ros/demo_recorder", "arm_commands") > 0, 60.0,
                        f"commands heard on {arm_topic} (on /diagnostics)")


def _reports(children, control, files: dict[str, Path], exit_codes: dict[str, int], run: dict) -> dict:
    """Each control node's report, once every child has exited cleanly and written its file (else one line); the
    children's pids, exit codes and reported summaries go into `run`."""
    from vla_ros.core.node_report import NodeReport

    for child in children:
        path = files.get(child.name)
        missing = path is not None and not path.is_file()
        if exit_codes[child.name] != 0 or missing:
            raise VlaRosError(f"{child.name} exited with code {exit_codes[child.name]}"
                              + (f" without writing {path}" if missing else ""))
        run[child.name] = {**run.get(child.name, {}), "pid": child.process.pid, "exit_code": exit_codes[child.name]}
    reports = {child.name: NodeReport.load(files[child.name]) for child in control}
    for name, report in reports.items():
        run[name].update(report.summary)
    return reports


def _drive(duration: float, graph, children, robot, arm, target) -> tuple[list[float], float, float]:
    """Let the graph run for `duration` s (or until Ctrl-C) while the children run: (EE distances to the target from
    the measured joint state every 0.25 s, the last at the end; when it started, ROS time; the time it ran)."""
    from vla_ros.ros.base import now_sec

    data = robot.new_data()

    def distance() -> float:
        q = graph.policy.states.cache.positions
        return float(np.linalg.norm(robot.fk(q, arm.ee_frame_id, data).translation - target))

    started, started_ros = time.monotonic(), now_sec(graph.policy)
    distances = []
    try:
        while (elapsed := time.monotonic() - started) < duration:
            time.sleep(0.25)
            for child in children:
                child.check_running()
            distances.append(distance())
            if len(distances) % 20 == 0:
                print(f"  t={elapsed:5.1f} s  EE {distances[-1] * 100:5.1f} cm from the target, "
                      f"{graph.policy.chunks.stats().ticks} ticks")
    except KeyboardInterrupt:
        pass
    distances.append(distance())
    return distances, started_ros, time.monotonic() - started


def _save_frames(out: Path, robot, recording, snapshots, target, demo_report) -> list[Path]:
    import cv2

    paths = []
    for k, snapshot in enumerate(snapshots):
        if len(recording.measured_times):
            q = recording.measured_q[int(np.argmin(np.abs(recording.measured_times - snapshot.stamp)))]
        else:
            q = robot.home
        image = demo_report.draw_chunk_on_frame(snapshot.pixels, robot, robot.cameras[0], q, snapshot.paths, target)
        path = out / f"frame_{k}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        paths.append(path)
    return paths
