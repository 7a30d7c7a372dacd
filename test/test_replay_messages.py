"""Bag messages -> core values: images, joint states and recorded commands mapped by name with the config prefixes."""

from __future__ import annotations

import numpy as np
import pytest
from bag_helpers import (compressed_image_msg, float_array_msg, image_msg, joint_group_msg, joint_single_msg,
                         joint_state_msg, pattern_image, trajectory_msg)

from vla_ros.core.images import ImageError
from vla_ros.core.replay.messages import CommandReader, JointStateReader, UnusableMessage, image_rgb


@pytest.mark.parametrize("flavor", ["rosbags", "rclpy"])
def test_joint_state_maps_by_name_and_ignores_extra_joints(franka, flavor):
    reader = JointStateReader(franka)
    names = ["panda_finger_joint2", "panda_joint3", "panda_joint1", "panda_finger_joint1"]
    reading = reader.read("/joint_states", joint_state_msg(0.0, names, [0.01, 0.3, 0.1, 0.02], [9, 3, 1, 2],
                                                           flavor=flavor))
    q = np.full(franka.nq, np.nan)
    q[reading.index] = reading.positions
    assert q[franka.indices(["panda_joint1", "panda_joint3", "panda_finger_joint1"])].tolist() == [0.1, 0.3, 0.02]
    assert np.isnan(q[franka.indices(["panda_joint2"])[0]])
    assert reading.velocities.tolist() == [3, 1, 2]
    assert reader.ignored_names == {"/joint_states:panda_finger_joint2"}


def test_joint_state_prefixes_per_source(aloha):
    reader = JointStateReader(aloha)
    reading = reader.read("/follower_right/joint_states",
                          joint_state_msg(0.0, ["waist", "gripper", "left_finger"], [0.5, 1.0, 0.03]))
    assert [aloha.joint_names[i] for i in reading.index] == ["follower_right/waist", "follower_right/left_finger"]
    assert reading.positions.tolist() == [0.5, 0.03]
    assert "/follower_right/joint_states:gripper" in reader.ignored_names


@pytest.mark.parametrize("names, positions, reason", [
    (["panda_joint1", "panda_joint2"], [0.1], "joint_state_length_mismatch"),
    (["waist", "shoulder"], [0.1, 0.2], "joint_state_no_robot_joint"),
    (["panda_joint1"], [float("nan")], "joint_state_not_finite"),
])
def test_unusable_joint_states_carry_a_reason(franka, names, positions, reason):
    with pytest.raises(UnusableMessage) as exc:
        JointStateReader(franka).read("/joint_states", joint_state_msg(0.0, names, positions))
    assert exc.value.reason == reason


@pytest.mark.parametrize("flavor", ["rosbags", "rclpy"])
def test_trajectory_command_maps_by_name(franka, flavor):
    controller = franka.controllers[0]
    reader = CommandReader(franka)
    names = list(reversed(controller.joints))
    reading = reader.read(controller.topic, trajectory_msg(names, np.arange(7) * 0.1, 0.02, flavor=flavor))
    assert [franka.joint_names[i] for i in reading.index] == names
    assert reading.positions.tolist() == pytest.approx((np.arange(7) * 0.1).tolist())


def test_trajectory_command_with_unknown_joint_is_refused(franka):
    controller = franka.controllers[0]
    with pytest.raises(UnusableMessage) as exc:
        CommandReader(franka).read(controller.topic, trajectory_msg(["shoulder_pan_joint"], [0.0], 0.02))
    assert exc.value.reason == "command_unknown_joint"


def test_float_array_command_uses_controller_order_and_checks_length(tmp_path):
    from robot_helpers import JOINTS, write_dh_robot

    from vla_ros.core.robot import load_robot as load

    robot = load(write_dh_robot(tmp_path))
    controller = robot.controllers[0]
    reading = CommandReader(robot).read(controller.topic, float_array_msg(np.arange(6) * 0.2))
    assert [robot.joint_names[i] for i in reading.index] == JOINTS
    with pytest.raises(UnusableMessage) as exc:
        CommandReader(robot).read(controller.topic, float_array_msg([0.1, 0.2]))
    assert exc.value.reason == "command_length_mismatch"


def test_interbotix_commands_select_their_group_and_map_gripper_units(aloha):
    reader = CommandReader(aloha)
    group = next(c for c in aloha.controllers if c.name == "left_arm")
    reading = reader.read(group.topic, joint_group_msg("arm", [0.1, -0.9, 1.1, 0.0, -0.3, 0.2]))
    assert [aloha.joint_names[i] for i in reading.index] == list(group.joints)
    assert reading.positions == pytest.approx([0.1, -0.9, 1.1, 0.0, -0.3, 0.2], abs=1e-6)  # float32 on the wire
    with pytest.raises(UnusableMessage) as exc:
        reader.read(group.topic, joint_group_msg("other_group", [0.0] * 6))
    assert exc.value.reason == "command_other_group"

    single = next(c for c in aloha.controllers if c.name == "left_gripper")
    gripper = aloha.arm("left").gripper
    command_open, command_closed = single.command_range
    opened = reader.read(single.topic, joint_single_msg("gripper", command_open))
    closed = reader.read(single.topic, joint_single_msg("gripper", command_closed))
    half = reader.read(single.topic, joint_single_msg("gripper", (command_open + command_closed) / 2))
    assert opened.positions[0] == pytest.approx(gripper.open, abs=1e-6)
    assert closed.positions[0] == pytest.approx(gripper.closed, abs=1e-6)
    assert half.positions[0] == pytest.approx((gripper.open + gripper.closed) / 2, abs=1e-6)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "mono8"])
def test_images_become_rgb(encoding):
    rgb = pattern_image(3, 5, seed=2)
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "rgba8": np.dstack([rgb, np.full((3, 5), 255, np.uint8)]),
              "mono8": rgb[..., 0]}[encoding]
    out = image_rgb(image_msg(1.0, pixels, encoding), "sensor_msgs/msg/Image", "cam")
    expected = np.repeat(rgb[..., :1], 3, axis=2) if encoding == "mono8" else rgb
    np.testing.assert_array_equal(out, expected)


def test_depth_and_broken_images_are_refused():
    depth = image_msg(1.0, np.ones((2, 2), np.uint16), "16UC1")
    with pytest.raises(UnusableMessage) as exc:
        image_rgb(depth, "sensor_msgs/msg/Image", "cam")
    assert exc.value.reason == "depth_image"
    broken = compressed_image_msg(1.0, pattern_image(4, 4, seed=0))
    broken.data = broken.data[:10]
    with pytest.raises(ImageError, match="cannot decode"):
        image_rgb(broken, "sensor_msgs/msg/CompressedImage", "cam")
