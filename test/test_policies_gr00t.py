"""Isaac-GR00T ZeroMQ client against a loopback REP server speaking GR00T's protocol: N1.5 flat and N1.6 nested
request layouts, msgpack + np.save and torch.save serialisation, replies read without unpickling anything unsafe,
one-line errors for bad servers. Optionally (not in CI) against Isaac-GR00T's own server classes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest

from policies_helpers import camera_images, changed_config, observation, shipped_policy
from vla_ros.peer_servers import LoopbackGr00tServer, LoopbackOpenVLAServer
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import PolicyServerError, PolicyUnavailableError, make_policy
from vla_ros.core.policies.gr00t_zmq import pack_msgpack, unpack_msgpack
from vla_ros.core.rotations import from_matrix
from vla_ros.core.types import BadChunkError
from vla_ros.core.robot import load_robot

BRIDGE_KEYS = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


@pytest.fixture(scope="module")
def robots():
    return {name: load_robot(name) for name in ("aloha", "widowx")}




def _n16_bridge_reply(steps: int = 8, prefix: str = "") -> list:
    """Gr00tPolicy.get_action's (actions, info): float32 (B=1, T, D=1) per Bridge key."""
    actions = {f"{prefix}{key}": np.full((1, steps, 1), 0.01 * (i + 1), np.float32)
               for i, key in enumerate(BRIDGE_KEYS)}
    actions[f"{prefix}gripper"] = np.array([[[0.2], [0.7]] * (steps // 2)], np.float32)
    return [actions, {}]


def test_n16_nested_request_with_ee_state_and_chunk(robots):
    widowx = robots["widowx"]
    with LoopbackGr00tServer(lambda data: _n16_bridge_reply()) as server:
        policy = shipped_policy("gr00t_n16_widowx", widowx, url=server.url)
        chunk = policy.infer(observation(widowx, camera_images(widowx), instruction="put the spoon on the towel", stamp=4.0))
    request = server.received[0]
    assert set(request) == {"endpoint", "data"} and request["endpoint"] == "get_action"
    assert request["data"]["options"] is None
    obs = request["data"]["observation"]
    assert set(obs) == {"video", "state", "language"}
    image = obs["video"]["image_0"]
    assert image.dtype == np.uint8 and image.shape == (1, 1, 256, 320, 3)
    assert obs["language"] == {"annotation.human.action.task_description": [["put the spoon on the towel"]]}
    state = {key: value for key, value in obs["state"].items()}
    assert set(state) == {"x", "y", "z", "roll", "pitch", "yaw", "pad", "gripper"}
    assert all(v.dtype == np.float32 and v.shape == (1, 1, 1) for v in state.values())  # Gr00tPolicy's strict check
    pose = widowx.fk(widowx.home, widowx.arm("arm").ee_frame)
    rpy = from_matrix("rpy", pose.rotation)
    np.testing.assert_allclose([state[k][0, 0, 0] for k in ("x", "y", "z")], pose.translation, atol=1e-6)
    np.testing.assert_allclose([state[k][0, 0, 0] for k in ("roll", "pitch", "yaw")], rpy, atol=1e-6)
    assert state["pad"][0, 0, 0] == 0.0 and state["gripper"][0, 0, 0] == pytest.approx(1.0)
    assert chunk.actions.shape == (8, 7) and chunk.dt == pytest.approx(0.2) and chunk.stamp == 4.0
    np.testing.assert_allclose(chunk.actions[0, :6], [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], rtol=1e-6)
    assert chunk.actions[:, 6].tolist() == [0.0, 1.0] * 4  # gripper thresholded at 0.5 (simpler_env.py)


def test_n16_sim_wrapper_layout(robots):
    widowx = robots["widowx"]
    with LoopbackGr00tServer(lambda data: _n16_bridge_reply(prefix="action.")) as server:
        policy = shipped_policy("gr00t_n16_widowx", widowx, url=server.url, protocol="n1.6_sim_wrapper")
        chunk = policy.infer(observation(widowx, camera_images(widowx), instruction="open the drawer"))
    obs = server.received[0]["data"]["observation"]
    assert obs["video.image_0"].shape == (1, 1, 256, 320, 3)
    assert obs["state.x"].shape == (1, 1, 1) and obs["state.pad"].dtype == np.float32
    assert obs["annotation.human.action.task_description"] == ["open the drawer"]
    assert chunk.actions.shape == (8, 7)


@pytest.mark.parametrize("serialization", ["msgpack", "torch"])
def test_n15_flat_request_and_squeezed_reply(robots, serialization):
    aloha = robots["aloha"]
    rng = np.random.default_rng(2)
    arms = rng.uniform(-1, 1, (2, 16, 6))
    # N1.5 squeezes its unbatched reply: 1-wide parts arrive as (16,)
    reply = {"action.left_arm": arms[0], "action.left_gripper": np.full(16, 0.25), "action.right_arm": arms[1],
             "action.right_gripper": np.full(16, 0.75)}
    with LoopbackGr00tServer(lambda data: reply, serialization=serialization, api_token="s3cret") as server:
        policy = shipped_policy("gr00t_n15_aloha", aloha, url=server.url, serialization=serialization, api_token="s3cret")
        chunk = policy.infer(observation(aloha, camera_images(aloha), instruction="transfer the cube"))
    request = server.received[0]
    assert request["endpoint"] == "get_action" and request["api_token"] == "s3cret"
    data = request["data"]
    assert set(data) == {"video.cam_high", "video.cam_left_wrist", "video.cam_right_wrist", "state.left_arm",
                         "state.left_gripper", "state.right_arm", "state.right_gripper",
                         "annotation.human.task_description"}
    assert data["video.cam_high"].shape == (1, 224, 224, 3) and data["video.cam_high"].dtype == np.uint8
    assert data["state.left_arm"].shape == (1, 6) and data["state.right_gripper"].shape == (1, 1)
    assert data["annotation.human.task_description"] == ["transfer the cube"]
    np.testing.assert_allclose(chunk.actions[:, :6], arms[0])
    np.testing.assert_allclose(chunk.actions[:, 7:13], arms[1])
    assert chunk.actions[0, 6] == 0.25 and chunk.actions[0, 13] == 0.75 and chunk.dt == pytest.approx(0.02)


def test_torch_replies_cannot_run_code(robots, tmp_path):
    """A legacy (torch.save) server's reply goes through torch's weights-only unpickler: a pickle that would run a
    command is refused and the command never runs."""
    canary = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {canary}",)

    buffer = io.BytesIO()
    import torch

    torch.save({"action.left_arm": Exploit()}, buffer)
    aloha = robots["aloha"]
    with LoopbackGr00tServer(lambda data: {}, serialization="torch", raw_reply=buffer.getvalue()) as server:
        policy = shipped_policy("gr00t_n15_aloha", aloha, url=server.url, serialization="torch")
        with pytest.raises(PolicyServerError, match=r"GR00T server tcp://127\.0\.0\.1:\d+: reply is not "
                                                    r"torch-serialised GR00T data \(UnpicklingError") as info:
            policy.infer(observation(aloha, camera_images(aloha)))
    assert not canary.exists() and "\n" not in str(info.value)


def test_msgpack_replies_refuse_pickled_arrays(robots):
    """np.load(allow_pickle=False): an object array in a reply (a pickle inside .npy) is refused."""
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    raw = msgpack.packb([{"x": {"__ndarray_class__": True, "as_npy": buffer.getvalue()}}, {}])
    widowx = robots["widowx"]
    with LoopbackGr00tServer(lambda data: {}, raw_reply=raw) as server:
        with pytest.raises(PolicyServerError, match=r"reply is not msgpack-serialised GR00T data \(ValueError: "
                                                    r"Object arrays cannot be loaded"):
            shipped_policy("gr00t_n16_widowx", widowx, url=server.url).infer(observation(widowx, camera_images(widowx)))


def _raise(message):
    def policy(data):
        raise KeyError(message)
    return policy


@pytest.mark.parametrize("server_kwargs, error, message", [
    ({"policy": _raise("video.image_0")}, PolicyServerError, r"GR00T server tcp://.*: server error: 'video\.image_0'"),
    ({"policy": lambda d: {}, "raw_reply": b"ERROR"}, PolicyServerError, "answered ERROR"),
    ({"policy": lambda d: {}, "raw_reply": b"HTTP/1.1 400 Bad Request\r\n\r\n"}, PolicyServerError,
     "reply is not msgpack-serialised GR00T data"),
    ({"policy": lambda d: {"action.x": np.zeros((8, 1))}}, BadChunkError,
     r"GR00T n1\.6 reply is dict, expected \[actions, info\]"),
    ({"policy": lambda d: [{"x": np.zeros((1, 8, 1))}, {}]}, BadChunkError, r"GR00T reply has no 'y' \(keys: x\)"),
    ({"policy": lambda d: [{k: np.zeros((1, 8, 2)) for k in BRIDGE_KEYS}, {}]}, BadChunkError,
     r"GR00T reply 'x' has shape \(8, 2\), expected \(H, 1\)"),
    ({"policy": lambda d: [{k: np.zeros((8, 1)) for k in BRIDGE_KEYS}, {}]}, BadChunkError,
     r"GR00T reply 'x' has shape \(8, 1\), expected \(1, H, 1\)"),
    ({"policy": lambda d: [{k: np.zeros((1, 16, 1)) for k in BRIDGE_KEYS}, {}]}, BadChunkError,
     r"actions have shape \(16, 7\), expected \(8, 7\)"),
    ({"policy": lambda d: [{k: np.array([[["a"]] * 8]) for k in BRIDGE_KEYS}, {}]}, BadChunkError,
     r"GR00T reply 'x' is not numeric"),
    ({"policy": lambda d: [{k: np.full((1, 8, 1), np.nan) for k in BRIDGE_KEYS}, {}]}, BadChunkError,
     "non-finite action at step 0, column 0"),
])
def test_bad_servers_are_one_line_errors(robots, server_kwargs, error, message):
    widowx = robots["widowx"]
    with LoopbackGr00tServer(**server_kwargs) as server:
        with pytest.raises(error, match=message) as info:
            shipped_policy("gr00t_n16_widowx", widowx, url=server.url).infer(observation(widowx, camera_images(widowx)))
    assert "\n" not in str(info.value)


def test_wrong_api_token_is_named(robots):
    widowx = robots["widowx"]
    with LoopbackGr00tServer(lambda d: _n16_bridge_reply(), api_token="right") as server:
        with pytest.raises(PolicyServerError, match="server error: Unauthorized: Invalid API token"):
            shipped_policy("gr00t_n16_widowx", widowx, url=server.url, api_token="wrong").infer(
                observation(widowx, camera_images(widowx)))


def test_timeout_then_a_fresh_socket_serves_the_next_call(robots):
    widowx = robots["widowx"]
    with LoopbackGr00tServer(lambda d: _n16_bridge_reply(), delay_s=0.4) as server:
        policy = shipped_policy("gr00t_n16_widowx", widowx, url=server.url, timeout_s=0.1)
        started = time.monotonic()
        with pytest.raises(PolicyUnavailableError, match=r"GR00T server .*: no reply within 0\.1 s \(server down, "
                                                         r"busy, or not an Isaac-GR00T policy server\)"):
            policy.infer(observation(widowx, camera_images(widowx)))
        assert time.monotonic() - started < 0.35
        time.sleep(0.5)  # the server answers the abandoned request into the closed socket
        server.delay_s = 0.0
        assert policy.infer(observation(widowx, camera_images(widowx))).actions.shape == (8, 7)


def test_nobody_listening_times_out(robots):
    widowx = robots["widowx"]
    with LoopbackGr00tServer(lambda d: {}) as server:
        url = server.url  # a port that was just free again
    with pytest.raises(PolicyUnavailableError, match=r"no reply within 0\.2 s"):
        shipped_policy("gr00t_n16_widowx", widowx, url=url, timeout_s=0.2).infer(observation(widowx, camera_images(widowx)))


def test_an_http_server_is_named(robots):
    """ZeroMQ never completes its handshake with a plain TCP server: the call times out and says what to check."""
    widowx = robots["widowx"]
    with LoopbackOpenVLAServer("{}") as http_server:
        url = "tcp://" + http_server.url.removeprefix("http://").removesuffix("/act")
        with pytest.raises(PolicyUnavailableError, match=r"or not an Isaac-GR00T policy server"):
            shipped_policy("gr00t_n16_widowx", widowx, url=url, timeout_s=0.3).infer(
                observation(widowx, camera_images(widowx)))


def test_codec_matches_gr00ts_msgserializer_format():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    packed = pack_msgpack({"a": array, "s": "x"})
    raw = msgpack.unpackb(packed)
    assert raw["a"]["__ndarray_class__"] is True
    np.testing.assert_array_equal(np.load(io.BytesIO(raw["a"]["as_npy"]), allow_pickle=False), array)
    decoded = unpack_msgpack(packed)
    assert decoded["s"] == "x" and decoded["a"].dtype == np.float32
    np.testing.assert_array_equal(decoded["a"], array)


@pytest.mark.parametrize("change, message", [
    ({"url": "http://127.0.0.1:5555"}, r"url: expected tcp://host:port"),
    ({"protocol": "n2"}, r"protocol: expected one of n1\.5, n1\.6, n1\.6_sim_wrapper"),
    ({"serialization": "pickle"}, "serialization: expected one of msgpack, torch"),
    ({"action": [{"key": "x", "width": 3}]}, "action: widths add up to 3, the action space has 7 columns"),
    ({"video": {"image_0": "wrist"}}, r"video\.image_0: camera 'wrist' is not a camera of robot widowx"),
    ({"state": {"x": [{"ee": "gripper"}]}}, r"state\.x\[0\]\.ee: robot widowx has no arm 'gripper'"),
])
def test_config_errors(robots, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        make_policy(changed_config("gr00t_n16_widowx", tmp_path, **change), robot=robots["widowx"])


# --- against Isaac-GR00T's own server classes (not in CI) -------------------------------------------------------------

GR00T_SOURCES = os.environ.get("VLA_ROS_GR00T_SOURCES")

# Runs a fetched Isaac-GR00T file's server class with a policy that answers fixed actions. Only the imports its
# module needs from the rest of gr00t are stubbed (ModalityConfig, BasePolicy, to_json_serializable).
_PEER_SERVER = textwrap.dedent("""
    import importlib.util, sys, types, numpy as np
    path, kind, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for name in ("gr00t", "gr00t.data", "gr00t.data.dataset", "gr00t.data.types", "gr00t.data.utils", "gr00t.policy",
                 "gr00t.policy.policy", "gr00t.eval"):
        sys.modules[name] = types.ModuleType(name)
    class ModalityConfig:  # only named by the serializer
        pass
    class BasePolicy:
        def __init__(self, *, strict=False):
            pass
    sys.modules["gr00t.data.dataset"].ModalityConfig = ModalityConfig
    sys.modules["gr00t.data.types"].ModalityConfig = ModalityConfig
    sys.modules["gr00t.data.utils"].to_json_serializable = lambda x: x
    sys.modules["gr00t.policy.policy"].BasePolicy = BasePolicy
    package = "gr00t.policy" if kind == "n1.6" else "gr00t.eval"
    spec = importlib.util.spec_from_file_location(package + ".server", path, submodule_search_locations=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    spec.loader.exec_module(module)
    keys = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
    if kind == "n1.6":
        class Policy:
            def get_action(self, observation, options=None):
                assert observation["state"]["x"].dtype == np.float32
                return {k: np.full((1, 8, 1), 0.5, np.float32) for k in keys}, {}
            def reset(self, options=None):
                return {}
        module.PolicyServer(Policy(), host="127.0.0.1", port=port).run()
    else:
        server = module.BaseInferenceServer(host="127.0.0.1", port=port)
        def get_action(observation):
            assert observation["state.left_arm"].shape == (1, 6)
            return {"action.left_arm": np.zeros((16, 6)), "action.left_gripper": np.ones(16),
                    "action.right_arm": np.zeros((16, 6)), "action.right_gripper": np.ones(16)}
        server.register_endpoint("get_action", get_action)
        server.run()
""")


@pytest.mark.skipif(not GR00T_SOURCES, reason="set VLA_ROS_GR00T_SOURCES to a directory holding Isaac-GR00T's "
                                              "gr00t/eval/service.py (N1 / N1.5, either serialisation) and/or "
                                              "gr00t/policy/server_client.py (N1.6)")
@pytest.mark.parametrize("kind, relative, policy_name, robot_name", [
    ("n1.5", "gr00t/eval/service.py", "gr00t_n15_aloha", "aloha"),
    ("n1.6", "gr00t/policy/server_client.py", "gr00t_n16_widowx", "widowx"),
])
def test_against_isaac_gr00t_server_code(robots, tmp_path, kind, relative, policy_name, robot_name):
    source = Path(GR00T_SOURCES) / relative
    if not source.is_file():
        pytest.skip(f"{source} not present")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "peer_server.py"
    script.write_text(_PEER_SERVER)
    server = subprocess.Popen([sys.executable, str(script), str(source), kind, str(port)], env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        robot = robots[robot_name]
        # Isaac-GR00T before 2025-09 serialised with torch.save (service.py TorchSerializer)
        serialization = "torch" if "torch.save" in source.read_text() else "msgpack"
        policy = shipped_policy(policy_name, robot, url=f"tcp://127.0.0.1:{port}", timeout_s=20.0,
                                serialization=serialization)
        chunk = policy.infer(observation(robot, camera_images(robot)))
        assert chunk.horizon == (16 if kind == "n1.5" else 8)
    finally:
        server.kill()
        output = server.communicate(timeout=10)[0].decode(errors="replace")
    assert "Error in server" not in output, output
