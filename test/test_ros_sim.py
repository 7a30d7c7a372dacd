"""sim_node on real rclpy: driver-like joint_states (source prefixes stripped), rendered camera frames, obeying the
configured controller topics (overridden to Float64MultiArray for ALOHA here) and serving the franka gripper's
control_msgs action; and the demo graph (colour-target baseline + sim) closing the loop with the real types."""

import os
import time
from contextlib import contextmanager

import numpy as np
from action_msgs.msg import GoalStatus
from control_msgs.action import GripperCommand
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from ros_helpers import wait_for
from vla_ros.core.robot import load_robot
from vla_ros.ros import qos
from vla_ros.ros.bringup import start_graph, spin_each
from vla_ros.ros.params import as_overrides
from vla_ros.ros.sim_node import SimNode


@contextmanager
def spinning(nodes, context):
    """Each node spun in its own thread inside the block; afterwards the executors stop and the nodes are destroyed."""
    spinners = spin_each(nodes, context)
    try:
        yield
    finally:
        for executor, thread in spinners:
            executor.shutdown(timeout_sec=2.0)
            thread.join(timeout=2.0)
        for node in nodes:
            node.destroy_node()


def test_sim_node_publishes_driver_names_and_frames_and_obeys_commands(ros_context):
    from rclpy.node import Node

    robot = load_robot("aloha")
    sim = SimNode(robot=robot, context=ros_context, parameter_overrides=as_overrides(
        {"robot": "aloha", "controller_interface_override": "float64_multi_array", "camera_rate_hz": 5.0}))
    probe = Node("sim_probe", context=ros_context)
    states, frames = [], []
    probe.create_subscription(JointState, "/follower_left/joint_states", states.append, qos.SENSOR)
    probe.create_subscription(Image, "/cam_high/camera/color/image_rect_raw", frames.append, qos.SENSOR)
    command = probe.create_publisher(Float64MultiArray, "/follower_left/commands/joint_group", qos.COMMAND)
    with spinning([sim, probe], ros_context):
        assert wait_for(lambda: states and frames, 15.0)
        names = list(states[-1].name)
        assert names == [j.removeprefix("follower_left/") for j in robot.joint_names if j.startswith("follower_left/")]
        frame = frames[-1]
        assert (frame.encoding, frame.width, frame.height) == ("rgb8", 640, 480)
        pixels = np.frombuffer(bytes(frame.data), np.uint8)
        assert pixels.std() > 5  # a rendered scene, not a blank frame
        # the cameras render below the node's priority (render_niceness); the node's own threads keep theirs
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, sim._renderer.native_id) == min(19, own + 10)
        target = robot.arm("left").home + np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
        waist = names.index("waist")
        assert wait_for(lambda: (command.publish(Float64MultiArray(data=target.tolist())) or True)
                        and abs(states[-1].position[waist] - 0.2) < 0.01, 5.0), states[-1].position[waist]


def test_sim_serves_the_franka_gripper_action_and_aborts_a_bad_goal(ros_context, franka):
    from rclpy.action import ActionClient
    from rclpy.node import Node

    sim = SimNode(robot=franka, context=ros_context, parameter_overrides=as_overrides(
        {"robot": "franka", "camera_rate_hz": 1.0}))
    probe = Node("gripper_probe", context=ros_context)
    states = []
    probe.create_subscription(JointState, "/joint_states", states.append, qos.SENSOR)
    client = ActionClient(probe, GripperCommand, "/panda_gripper/gripper_action")

    def send(position: float):
        goal = GripperCommand.Goal()
        goal.command.position, goal.command.max_effort = position, 20.0
        sent = client.send_goal_async(goal)
        assert wait_for(sent.done, 5.0) and sent.result().accepted
        result = sent.result().get_result_async()
        assert wait_for(result.done, 5.0)
        return result.result()

    def finger() -> float:
        return states[-1].position[list(states[-1].name).index("panda_finger_joint1")]

    with spinning([sim, probe], ros_context):
        assert client.wait_for_server(timeout_sec=10.0) and wait_for(lambda: states, 10.0)
        answer = send(0.01)
        assert answer.status == GoalStatus.STATUS_SUCCEEDED and answer.result.position == 0.01
        assert wait_for(lambda: abs(finger() - 0.01) < 1e-3, 5.0), finger()
        errors = sim.command_errors
        assert send(float("nan")).status == GoalStatus.STATUS_ABORTED  # refused, logged, the finger holds
        assert sim.command_errors == errors + 1 and abs(finger() - 0.01) < 1e-3
        assert send(0.03).status == GoalStatus.STATUS_SUCCEEDED  # still serving
        assert wait_for(lambda: abs(finger() - 0.03) < 1e-3, 5.0), finger()


def test_demo_graph_baseline_reaches_toward_the_target(ros_context):
    graph = start_graph("franka", "baseline", sim=True, context=ros_context)
    try:
        assert wait_for(lambda: graph.sim.commands_received > 0, 20.0)
        start = graph.sim.distance_to_target()
        deadline = time.monotonic() + 8.0
        wait_for(lambda: graph.sim.distance_to_target() < 0.5 * start, 8.0)
        assert graph.sim.distance_to_target() < 0.7 * start, (start, graph.sim.distance_to_target())
        assert graph.policy.chunks.stats().accepted_chunks > 0
        assert time.monotonic() <= deadline + 1.0
    finally:
        graph.shutdown()


def test_joint_states_start_once_every_camera_has_rendered(ros_context, monkeypatch):
    # the first frame compiles llvmpipe's shaders and holds the GIL for tens of ms at a stretch: joint states that
    # started before it came late at start-up (the demo's safety node saw 0.18 s old ones)
    import threading

    from rclpy.node import Node

    from vla_ros.core.sim.scene import SimScene

    release = threading.Event()
    render = SimScene.render
    monkeypatch.setattr(SimScene, "render", lambda self, name: release.wait(20.0) and render(self, name))
    robot = load_robot("widowx")
    sim = SimNode(robot=robot, context=ros_context, parameter_overrides=as_overrides({"robot": "widowx"}))
    probe = Node("sim_probe", context=ros_context)
    states = []
    probe.create_subscription(JointState, robot.joint_state_sources[0].topic, states.append, qos.SENSOR)
    with spinning([sim, probe], ros_context):
        assert wait_for(lambda: probe.count_publishers(robot.joint_state_sources[0].topic) > 0, 10.0)
        time.sleep(0.5)  # 50 joint-state periods at 100 Hz
        assert states == []
        release.set()
        assert wait_for(lambda: len(states) > 5, 10.0)
