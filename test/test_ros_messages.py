"""Message conversion without cv_bridge: every image encoding, joint states by name, EE command round trip."""

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, JointState

from vla_ros.core.ik import EECommand
from vla_ros.core.images import ImageError
from vla_ros.core.robot import CameraSpec
from vla_ros.ros.messages import (JointStateCache, JointStateError, ee_commands_from_msg, fill_ee_command,
                                  fill_image, fill_joint_state, image_from_compressed, image_from_msg)

CAMERA = CameraSpec("primary", "/camera/image_raw", "rgb8", 8, 6)
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def _image(encoding, pixels, pad=0, bigendian=False):
    msg = fill_image(Image(), encoding, pixels, 12.5)
    if bigendian:
        dtype = pixels.dtype.newbyteorder(">")
        msg.data = np.ascontiguousarray(pixels, dtype=dtype).tobytes()
        msg.is_bigendian = 1
    if pad:  # rows padded to a larger stride, as some drivers do
        rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
        msg.data = np.hstack([rows, np.full((msg.height, pad), 7, np.uint8)]).tobytes()
        msg.step += pad
    return msg


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding, pixels, expected", [
    ("rgb8", RGB, RGB),
    ("bgr8", RGB[..., ::-1], RGB),
    ("rgba8", np.dstack([RGB, np.full((6, 8), 255, np.uint8)]), RGB),
    ("mono8", RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=2)),
])
def test_colour_encodings_decode_to_rgb(encoding, pixels, expected, pad):
    out = image_from_msg(_image(encoding, pixels, pad), CAMERA)
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding, dtype", [("16UC1", np.uint16), ("32FC1", np.float32)])
def test_depth_encodings_keep_values(encoding, dtype, bigendian):
    # values above 255 and fractional metres: exactly what a broken 16UC1 conversion loses
    depth = (RNG.uniform(0, 60000, (6, 8)) if dtype == np.uint16 else RNG.uniform(0.1, 9.9, (6, 8))).astype(dtype)
    out = image_from_msg(_image(encoding, depth, pad=3, bigendian=bigendian), CAMERA)
    assert out.dtype == dtype and out.shape == (6, 8)
    np.testing.assert_array_equal(out, depth)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_images_decode_to_rgb(ext):
    # png is lossless: random pixels; jpeg is lossy: flat red / blue halves, checked for channel order
    image = RGB if ext == ".png" else np.concatenate([np.full((6, 4, 3), (230, 10, 10), np.uint8),
                                                      np.full((6, 4, 3), (10, 10, 230), np.uint8)], axis=1)
    ok, buffer = cv2.imencode(ext, np.ascontiguousarray(image[..., ::-1]))
    assert ok
    msg = CompressedImage(format="rgb8; " + ext[1:] + " compressed bgr8", data=buffer.tobytes())
    out = image_from_compressed(msg, CAMERA)
    assert out.shape == (6, 8, 3)
    if ext == ".png":
        np.testing.assert_array_equal(out, image)
    else:
        assert np.abs(out.astype(int) - image).mean() < 25


def test_unsupported_encoding_and_wrong_size_are_one_line_errors_naming_the_topic():
    msg = _image("rgb8", RGB)
    msg.encoding = "yuv422"
    with pytest.raises(ImageError, match=r"/camera/image_raw: unsupported encoding 'yuv422'"):
        image_from_msg(msg, CAMERA)
    big = _image("rgb8", np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(ImageError, match=r"/camera/image_raw: image is 16x12.*8x6"):
        image_from_msg(big, CAMERA)
    short = _image("rgb8", RGB)
    short.data = bytes(short.data)[:-10]
    with pytest.raises(ImageError, match="inconsistent"):
        image_from_msg(short, CAMERA)
    with pytest.raises(ImageError, match="cannot decode"):
        image_from_compressed(CompressedImage(format="jpeg", data=b"not a jpeg"), CAMERA)


def test_joint_states_mapped_by_name_with_source_prefix(aloha):
    cache = JointStateCache(aloha)
    for index, (source, joints) in enumerate(cache.sources):
        names = [j.removeprefix(source.prefix) for j in joints]
        # the driver's order differs from ours and it adds joints the model does not command
        order = list(reversed(range(len(names))))
        msg = fill_joint_state(JointState(), [names[i] for i in order] + ["gripper", "right_finger"],
                               [float(i) for i in order] + [9.0, 9.0], 3.0)
        cache.update(index, msg, now=10.0)
    assert cache.fresh(10.05, 0.1) and not cache.fresh(10.2, 0.1)
    for source, joints in cache.sources:
        for i, joint in enumerate(joints):
            assert cache.positions[aloha.joint_names.index(joint)] == i
    assert cache.stale_joint(10.2, 0.1) is not None


def test_joint_state_missing_a_joint_is_refused_whole(aloha):
    cache = JointStateCache(aloha)
    source, joints = cache.sources[0]
    names = [j.removeprefix(source.prefix) for j in joints]
    with pytest.raises(JointStateError, match=r"/follower_left/joint_states: joint 'elbow' missing"):
        cache.update(0, fill_joint_state(JointState(), [n for n in names if n != "elbow"], [0.0] * (len(names) - 1), 1.0), 1.0)
    assert not np.isfinite(cache.positions).any()  # nothing half-applied
    with pytest.raises(JointStateError, match="not finite"):
        cache.update(0, fill_joint_state(JointState(), names, [np.nan] + [0.0] * (len(names) - 1), 1.0), 1.0)
    with pytest.raises(JointStateError, match="positions"):
        cache.update(0, fill_joint_state(JointState(), names, [0.0], 1.0), 1.0)


@pytest.mark.parametrize("kind, frame", [("delta", "base"), ("delta", "ee"), ("pose", "base")])
def test_ee_command_round_trip(aloha, kind, frame):
    rotation = cv2.Rodrigues(np.array([0.1, -0.2, 0.3]))[0]
    commands = {"left": EECommand(kind, np.array([0.01, -0.02, 0.03]), rotation, frame, 0.25),
                "right": EECommand(kind, np.zeros(3), np.eye(3), frame, None)}
    arms = [a.name for a in aloha.arms]
    msg = fill_ee_command(JointState(), commands, 5.0)
    back = ee_commands_from_msg(msg, arms)
    assert set(back) == set(commands)
    for arm, command in commands.items():
        assert (back[arm].kind, back[arm].frame) == (kind, frame)
        np.testing.assert_allclose(back[arm].translation, command.translation)
        np.testing.assert_allclose(back[arm].rotation, command.rotation, atol=1e-12)
        assert back[arm].gripper == command.gripper
    msg.header.frame_id = "velocity:base"
    with pytest.raises(JointStateError, match="frame_id"):
        ee_commands_from_msg(msg, arms)
