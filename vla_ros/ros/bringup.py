"""Start nodes: one node per process (the console scripts / launch file), or the whole graph in one process.

The one-process graph (`vla-ros bringup`) is the path for pip-only installs: policy_node, ik_node (EE policies
only) and safety_node (and, for tests, sim_node) share one rclpy context, each node spun by its own executor thread
(see `spin_each` for why that beats one MultiThreadedExecutor). Parameters come
from config/nodes.yaml (or --params-file), with robot / policy / controller override given explicitly.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from vla_ros.core.robot import load_robot
from vla_ros.ros import params
from vla_ros.ros.base import freeze_startup_objects, thaw_startup_objects
from vla_ros.ros.ik_node import IKNode
from vla_ros.ros.node_process import NodeProcess
from vla_ros.ros.policy_node import PolicyNode
from vla_ros.ros.safety_node import SafetyNode


@dataclass
class Graph:
    """The nodes of a running one-process graph (None for a node not started)."""

    context: Any
    policy: Any
    ik: Any
    safety: Any
    sim: Any
    nodes: list = field(default_factory=list)
    spinners: list = field(default_factory=list)

    def add_node(self, node) -> None:
        """Spin one more node (e.g. an observer) in this graph's context; it is shut down with the graph."""
        self.nodes.append(node)
        self.spinners += spin_each([node], self.context)

    def shutdown(self) -> None:
        for executor, _ in self.spinners:
            executor.shutdown(timeout_sec=2.0)
        for _, thread in self.spinners:
            thread.join(timeout=2.0)
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()
        thaw_startup_objects()


def start_graph(robot: str, policy: str, sim: bool = False, controller_interface: str = "",
                params_file: Path | None = None, overrides: dict | None = None, context=None,
                domain_id: int | None = None, policy_object=None, policy_only: bool = False) -> Graph:
    """Build the graph in this process and start spinning it in a background thread of the executor.

    `context`: an initialised rclpy Context to use (tests); otherwise one is created on `domain_id`.
    `policy_object`: an already-built Policy (tests inject misbehaving ones); `policy` then only names it.
    `policy_only`: build policy_node alone (the demo runs ik_node and safety_node as their own processes).
    Callers raise the process's priority first if they want it (params.raise_priority; see `run`).
    """
    params.use_fastdds_profile()
    if context is None:
        context = rclpy.Context()
        args = ["--ros-args", "--params-file", str(params_file or params.nodes_params_file())]
        rclpy.init(args=args, context=context, domain_id=domain_id)
    model = load_robot(robot)
    values = {"robot": robot, "controller_interface_override": controller_interface, **(overrides or {})}
    node_kwargs = {"context": context, "parameter_overrides": params.as_overrides(values)}
    nodes = []
    try:
        sim_node = None
        if sim:
            from vla_ros.ros.sim_node import SimNode  # MuJoCo only when simulating (a robot PC may not have its GL)

            sim_node = SimNode(robot=model, **node_kwargs)
            nodes.append(sim_node)
        safety = None
        if not policy_only:
            safety = SafetyNode(robot=model, **node_kwargs)
            nodes.append(safety)
        # the simulated robot starts at home and publishes only once the graph spins: check from home at once
        startup = {"contract_check_wait": 0.0} if sim else {}
        policy_kwargs = dict(node_kwargs, parameter_overrides=params.as_overrides(
            {**startup, **values, "policy": policy}))
        policy_node = PolicyNode(robot=model, policy=policy_object, **policy_kwargs)
        nodes.append(policy_node)
        ik = None
        if policy_node.space.is_ee and not policy_only:
            ik = IKNode(robot=model, **node_kwargs)
            nodes.append(ik)
    except BaseException:
        for node in nodes:
            node.destroy_node()
        context.try_shutdown()
        raise
    freeze_startup_objects()
    return Graph(context, policy_node, ik, safety, sim_node, nodes, spin_each(nodes, context))


def spin_each(nodes: list, context) -> list[tuple[SingleThreadedExecutor, threading.Thread]]:
    """One SingleThreadedExecutor and thread per node.

    Why not one MultiThreadedExecutor: rclpy's re-polls its wait set while a mutually exclusive group is busy,
    holding the GIL; with the policy worker thread competing, control ticks were measured at 2-35 Hz instead of 50
    (2-core machine). One executor per node runs every callback inline, holds the control rate, and keeps each
    node's callbacks serialised (the nodes' state needs no further locking against its own callbacks).
    """
    spinners = []
    for node in nodes:
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        thread = threading.Thread(target=_spin, args=(executor,), name=f"spin-{node.get_name()}", daemon=True)
        thread.start()
        spinners.append((executor, thread))
    return spinners


def _spin(executor) -> None:
    try:
        executor.spin()
    except (ExternalShutdownException, RuntimeError):  # the context was shut down under it
        pass


def summary(graph: Graph, duration: float) -> dict:
    """What the graph did: commands, holds, executor and safety statistics (the --summary JSON)."""
    stats = graph.policy.chunks.stats()
    out = {
        "robot": graph.policy.robot.name,
        "policy": graph.policy.policy.metadata.name,
        "duration_s": duration,
        "policy_node": {"published": graph.policy.published, "image_errors": graph.policy.image_errors,
                        "stale_joint_state_ticks": graph.policy.stale_ticks, "executor": stats.as_dict(),
                        "worker": graph.policy.worker.stats()},
    }
    if graph.safety is not None:
        out["safety_node"] = graph.safety.summary()
    if graph.ik is not None:
        out["ik_node"] = graph.ik.summary()
    if graph.sim is not None:
        out["sim_node"] = {"commands_received": graph.sim.commands_received,
                           "ee_distance_to_target_m": graph.sim.distance_to_target()}
    return out


def run(robot: str, policy: str, sim: bool, duration: float | None, controller_interface: str = "",
        params_file: Path | None = None, overrides: dict | None = None, niceness: int | None = None) -> dict:
    """Run the graph for `duration` seconds (None: until Ctrl-C) and return its summary. With `sim`, sim_node runs
    as its own process, as a robot's driver does (ros/node_process.py says why), and the graph starts on its first
    joint states."""
    params.use_fastdds_profile()
    if niceness is not None and (note := params.raise_priority(niceness)):  # before the sim: it inherits it
        print(note, file=sys.stderr)
    values = dict(overrides or {})
    simulated = None
    if sim:
        simulated = NodeProcess("vla_ros.ros.sim_node", {"robot": robot, "controller_interface_override":
                                                         controller_interface}, params_file or params.nodes_params_file())
        values.setdefault("contract_check_wait", 60.0)  # policy_node waits for the sim's first joint states
    with simulated if simulated else contextlib.nullcontext():  # entering starts it, leaving stops it
        graph = start_graph(robot, policy, False, controller_interface, params_file, values)
        started = time.monotonic()
        try:
            while duration is None or time.monotonic() - started < duration:
                time.sleep(0.1)
                if simulated:
                    simulated.check_running()
        except KeyboardInterrupt:
            pass
        try:
            result = summary(graph, time.monotonic() - started)
        finally:
            graph.shutdown()
    if simulated:  # stopped on leaving the block; stop() again only reads its exit code
        result["sim_node"] = {"pid": simulated.process.pid, "exit_code": simulated.stop()}
    return result
