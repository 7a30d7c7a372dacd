"""OpenVLA-OFT deploy-server client against a loopback /act server: request keys and order as openvla-oft's ALOHA
eval client sends them, per-platform chunk length, proprio (joint and EE), one-line errors for bad servers."""

from __future__ import annotations

import json

import json_numpy
import numpy as np
import pytest

from policies_helpers import camera_images, changed_config, observation, shipped_policy
from vla_ros.peer_servers import LoopbackOpenVLAServer
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import PolicyServerError, PolicyUnavailableError, make_policy
from vla_ros.core.robot import load_robot
from vla_ros.core.rotations import from_matrix
from vla_ros.core.types import BadChunkError


@pytest.fixture(scope="module")
def robots():
    return {name: load_robot(name) for name in ("aloha", "widowx")}




def _chunk_reply(chunk: np.ndarray, double_encode: bool = False) -> str:
    """deploy.py's reply: the list of per-step actions, json_numpy-encoded (a JSON string of it when double)."""
    text = json_numpy.dumps(list(chunk))
    return json.dumps(text) if double_encode else text


@pytest.mark.parametrize("double_encode", [False, True])
def test_aloha_request_keys_order_state_and_chunk(robots, double_encode):
    aloha = robots["aloha"]
    chunk = np.random.default_rng(1).uniform(-1, 1, (25, 14))
    q = aloha.home.copy()
    left_finger = aloha.arm("left").gripper.index
    q[left_finger] = 0.01844 + 0.25 * (0.058 - 0.01844)  # a quarter open on the dataset's finger span
    with LoopbackOpenVLAServer(lambda p: _chunk_reply(chunk, double_encode)) as server:
        policy = shipped_policy("openvla_oft_aloha", aloha, url=server.url, double_encode=double_encode)
        result = policy.infer(observation(aloha, camera_images(aloha), q=q, instruction="fold the towel", stamp=3.0))
    request = server.requests[0]
    # deploy.py reads full_image first, then every key containing "wrist" in the request's order
    assert list(request) == ["path", "full_image", "left_wrist_image", "right_wrist_image", "state", "instruction"]
    for key in ("full_image", "left_wrist_image", "right_wrist_image"):
        assert request[key].shape == (224, 224, 3) and request[key].dtype == np.uint8
    assert request["instruction"] == "fold the towel"
    state = request["state"]
    assert state.shape == (14,)
    np.testing.assert_allclose(state[:6], q[aloha.arm("left").index], rtol=1e-6)
    assert state[6] == pytest.approx(0.25, abs=1e-6)
    # the right gripper at the robot config's open 0.057 m, over the dataset's 0.01844..0.058 m span
    assert state[13] == pytest.approx((0.057 - 0.01844) / (0.058 - 0.01844), abs=1e-6)
    np.testing.assert_allclose(result.actions, chunk)
    assert result.horizon == 25 and result.dt == pytest.approx(0.04) and result.stamp == 3.0


def test_bridge_proprio_is_the_ee_pose_and_the_gripper_is_thresholded(robots):
    widowx = robots["widowx"]
    chunk = np.zeros((5, 7))
    chunk[:, 6] = [0.2, 0.49, 0.51, 0.9, 0.5]
    with LoopbackOpenVLAServer(lambda p: _chunk_reply(chunk)) as server:
        result = shipped_policy("openvla_oft_bridge", widowx, url=server.url).infer(observation(widowx, camera_images(widowx)))
    request = server.requests[0]
    assert list(request) == ["path", "full_image", "state", "instruction"]
    pose = widowx.fk(widowx.home, widowx.arm("arm").ee_frame)
    np.testing.assert_allclose(request["state"][:3], pose.translation, atol=1e-6)
    np.testing.assert_allclose(request["state"][3:6], from_matrix("rpy", pose.rotation), atol=1e-6)
    assert request["state"][6] == pytest.approx(1.0)  # home: open
    assert result.actions[:, 6].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert result.horizon == 5 and result.dt == pytest.approx(0.2)


@pytest.mark.parametrize("reply, status, error, message", [
    (json.dumps("error"), 200, PolicyServerError,
     r"OpenVLA-OFT server http://127\.0\.0\.1:\d+/act: the server reported an error .*'full_image'"),
    ("<html>Not Found</html>", 404, PolicyServerError, r"OpenVLA-OFT server .*: HTTP 404"),
    ('{"detail": "Method Not Allowed"}', 200, BadChunkError, "OpenVLA-OFT reply .* is not a numeric array"),
    (_chunk_reply(np.zeros((24, 14))), 200, BadChunkError, r"shape \(24, 14\), expected \(25, 14\)"),
    (_chunk_reply(np.zeros((25, 7))), 200, BadChunkError, r"shape \(25, 7\), expected \(25, 14\)"),
    (json_numpy.dumps(np.zeros(14)), 200, BadChunkError, r"shape \(14,\), expected \(25, 14\)"),
    (_chunk_reply(np.full((25, 14), np.nan)), 200, BadChunkError, "non-finite action at step 0, column 0"),
])
def test_bad_servers_are_one_line_errors(robots, reply, status, error, message):
    aloha = robots["aloha"]
    with LoopbackOpenVLAServer(reply, status=status) as server:
        with pytest.raises(error, match=message) as info:
            shipped_policy("openvla_oft_aloha", aloha, url=server.url).infer(observation(aloha, camera_images(aloha)))
    assert "\n" not in str(info.value)


def test_a_slow_server_times_out(robots):
    aloha = robots["aloha"]
    with LoopbackOpenVLAServer(_chunk_reply(np.zeros((25, 14))), delay_s=0.5) as server:
        with pytest.raises(PolicyUnavailableError, match=r"OpenVLA-OFT server .*: no reply within 0\.1 s"):
            shipped_policy("openvla_oft_aloha", aloha, url=server.url, timeout_s=0.1).infer(observation(aloha, camera_images(aloha)))


@pytest.mark.parametrize("change, message", [
    ({"images": {"left_wrist_image": "cam_left_wrist", "full_image": "cam_high"}},
     r"images: the first key must be 'full_image'"),
    ({"images": {"full_image": "cam_high", "cam_low": "cam_low"}},
     r"images\.cam_low: deploy\.py reads only 'full_image' and keys containing 'wrist'"),
    ({"images": {"full_image": "overhead"}}, r"images\.full_image: camera 'overhead' is not a camera of robot aloha"),
    ({"url": "tcp://127.0.0.1:8777"}, "url: expected http://host:port/act"),
    ({"state": [{"arm": "left"}, {"ee": "left", "components": ["x", "w"]}]},
     r"state\[1\]\.components: expected a non-empty list of x, y, z, roll, pitch, yaw"),
])
def test_config_errors(robots, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        make_policy(changed_config("openvla_oft_aloha", tmp_path, **change), robot=robots["aloha"])
