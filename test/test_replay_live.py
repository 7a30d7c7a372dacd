"""`vla-ros replay --live`: a bag republished into a running graph with /clock, received by an rclpy subscriber."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bag_helpers import BagWriter, image_msg, joint_state_msg, pattern_image, string_msg

ROOT = Path(__file__).resolve().parents[1]


def _bag(path: Path) -> Path:
    with BagWriter(path, "mcap") as writer:
        writer.connection("/instruction", "std_msgs/msg/String", latched=True)  # as the policy node publishes it
        writer.write("/instruction", 50.0, string_msg("wave"))
        for i in range(10):
            t = 50.0 + 0.05 * i
            flavor = "rclpy" if i % 2 else "rosbags"
            writer.write("/joint_states", t, joint_state_msg(t, ["a"], [float(i)], flavor=flavor))
        writer.write("/camera/image_raw", 50.2, image_msg(50.2, pattern_image(4, 4, seed=0)))
    return path


def test_live_republishes_every_message_with_clock(tmp_path, ros_context, ros_domain_id):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    bag = _bag(tmp_path / "bag")
    node = __import__("rclpy").create_node("replay_live_probe", context=ros_context)
    received = {"clock": [], "joint_states": [], "image": [], "instruction": []}
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(Clock, "/clock",
                             lambda m: received["clock"].append(m.clock.sec + m.clock.nanosec * 1e-9), 100)
    node.create_subscription(JointState, "/joint_states", lambda m: received["joint_states"].append(m.position[0]), 100)
    node.create_subscription(Image, "/camera/image_raw", lambda m: received["image"].append(bytes(m.data)), 10)
    node.create_subscription(String, "/instruction", lambda m: received["instruction"].append(m.data), latched)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    code = ("from vla_ros.ros.replay_live import republish; "
            f"raise SystemExit(republish({str(bag)!r}, {{}}, rate=2.0, discovery_wait=20.0))")
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        if process.poll() is None:
            process.kill()
        stdout, stderr = process.communicate()
        executor.shutdown()
        node.destroy_node()
    assert process.returncode == 0, stderr
    assert "republished 12 messages of 3 topics" in stdout
    assert received["joint_states"] == [float(i) for i in range(10)]
    assert received["instruction"] == ["wave"]
    assert received["image"] == [pattern_image(4, 4, seed=0).tobytes()]
    clock = np.array(received["clock"])
    assert clock.size >= 10 and np.all(np.diff(clock) >= 0)
    assert clock[0] >= 50.0 - 1e-9 and clock[-1] <= 50.45 + 1e-9
