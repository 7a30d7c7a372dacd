"""openpi websocket client: codec compatibility with openpi_client's own msgpack_numpy, and the protocol against a
loopback server (metadata frame, round trip, error frame + 1011, reconnect with backoff, timeouts)."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from openpi_client import msgpack_numpy

from policies_helpers import franka_with_wrist_camera, observation
from vla_ros.peer_servers import LoopbackOpenpiServer
from vla_ros.core.config import Section
from vla_ros.core.policies import PolicyServerError, PolicyUnavailableError, make_policy
from vla_ros.core.policies.openpi_ws import Backoff, OpenpiWebsocketPolicy, pack, parse_request, unpack
from vla_ros.core.policies.spec import ActionTransform
from vla_ros.core.types import ActionSpace, BadChunkError
from vla_ros.resources import policy_config_dir

DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.float16,
          np.float32, np.float64]


@given(hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_arrays_encode_byte_for_byte_like_openpi(array):
    message = {"state": array, "prompt": "x", "nested": {"a": array}}
    assert pack(message) == msgpack_numpy.packb(message)
    decoded = msgpack_numpy.unpackb(pack(message))
    assert decoded["state"].dtype == array.dtype and decoded["state"].shape == array.shape
    assert np.array_equal(decoded["nested"]["a"], array, equal_nan=array.dtype.kind == "f")


@given(hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)),
       st.sampled_from([np.float32(1.5), np.int64(-3), np.bool_(True)]))
def test_decodes_what_openpi_encodes(array, scalar):
    decoded = unpack(msgpack_numpy.packb({"actions": array, "scalar": scalar}))
    assert decoded["actions"].dtype == array.dtype and decoded["actions"].shape == array.shape
    assert np.array_equal(decoded["actions"], array, equal_nan=array.dtype.kind == "f")
    assert type(decoded["scalar"]) is type(scalar) and decoded["scalar"] == scalar


@pytest.mark.parametrize("value", [np.array([object()], dtype=object), np.array([1 + 2j]), np.complex64(1j)])
def test_object_and_complex_dtypes_are_refused(value):
    with pytest.raises(TypeError, match="cannot be sent"):
        pack({"x": value})


# --- protocol against a loopback server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def droid_robot(tmp_path_factory):
    return franka_with_wrist_camera(tmp_path_factory.mktemp("robot"))


def _droid_policy(robot, url: str, **overrides):
    import yaml

    config = yaml.safe_load((policy_config_dir() / "openpi_pi0fast_droid.yaml").read_text())
    config.update(url=url, **overrides)
    return make_policy(config, robot=robot)


def _images(robot, seed=0):
    rng = np.random.default_rng(seed)
    return {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in robot.cameras}


def test_droid_round_trip_request_layout_and_action_transform(droid_robot):
    rng = np.random.default_rng(1)
    raw_actions = rng.uniform(-1.5, 1.5, (10, 8))

    with LoopbackOpenpiServer(lambda obs: {"actions": raw_actions, "policy_timing": {"infer_ms": np.float64(42.0)}},
                              metadata={"reset_pose": [0.0, 1.0]}) as server:
        policy = _droid_policy(droid_robot, server.url)
        q = droid_robot.home.copy()
        q[droid_robot.indices(["panda_finger_joint1"])[0]] = 0.01  # a quarter open
        obs = observation(droid_robot, _images(droid_robot), q=q, stamp=123.25)
        chunk = policy.infer(obs)

        request = server.received[0]
        assert set(request) == {"observation/exterior_image_1_left", "observation/wrist_image_left",
                                "observation/joint_position", "observation/gripper_position", "prompt"}
        for key in ("observation/exterior_image_1_left", "observation/wrist_image_left"):
            assert request[key].shape == (224, 224, 3) and request[key].dtype == np.uint8
        np.testing.assert_allclose(request["observation/joint_position"], q[:7], rtol=1e-6)
        np.testing.assert_allclose(request["observation/gripper_position"], [0.75])  # DROID: 1 = closed
        assert request["prompt"] == "pick up the block"
        assert policy.server_metadata == {"reset_pose": [0.0, 1.0]}

    # Reference client behaviour (openpi examples/droid/main.py): clip to [-1, 1], gripper > 0.5 -> 1; then rad/s.
    expected = np.clip(raw_actions, -1.0, 1.0)
    expected[:, 7] = (expected[:, 7] > 0.5).astype(float)
    expected[:, :7] *= 3.0
    np.testing.assert_array_equal(chunk.actions, expected)
    assert chunk.stamp == 123.25 and chunk.dt == pytest.approx(1 / 15)
    assert chunk.space.kind == "joint_vel" and chunk.space.gripper.closed == 1.0
    assert chunk.info["policy_timing"] == {"infer_ms": 42.0} and chunk.info["server_timing"]["infer_ms"] == 1.5


def test_aloha_style_nested_request_with_chw_images():
    template = parse_request(Section({
        "state": {"from": "state", "parts": [{"joints": ["j1", "j2"]}]},
        "images": {"cam_high": {"from": "image", "camera": "top", "layout": "chw"}},
        "prompt": {"from": "instruction"},
    }, "test.yaml", "request"), robot=None)
    space = ActionSpace(kind="joint_pos", arms=("arm",), joints_per_arm=(2,), gripper=None)
    with LoopbackOpenpiServer(lambda obs: {"actions": np.ones((4, 2), np.float32)}) as server:
        policy = OpenpiWebsocketPolicy(server.url, name="aloha_like", request=template, action_space=space, horizon=4,
                                       rate_hz=50.0, image_size=(32, 48), resize="pad")
        from vla_ros.core.types import Observation

        image = np.full((60, 80, 3), 200, np.uint8)
        chunk = policy.infer(Observation({"top": image}, {"j1": 0.5, "j2": -0.25}, "fold", 1.0))
        request = server.received[0]
    assert request["images"]["cam_high"].shape == (3, 32, 48) and request["images"]["cam_high"].dtype == np.uint8
    # pad mode keeps the 4:3 aspect ratio: 80x60 -> 48x36 is too tall, so 42x32 centred with black borders
    assert request["images"]["cam_high"][:, :, :3].max() == 0 and request["images"]["cam_high"][:, 16, 24].min() > 0
    assert request["state"].dtype == np.float32 and request["state"].tolist() == [0.5, -0.25]
    assert request["prompt"] == "fold" and policy.metadata.cameras == ("top",)
    np.testing.assert_array_equal(chunk.actions, np.ones((4, 2)))


def test_server_error_frame_and_1011_raise_then_the_next_call_reconnects(droid_robot):
    calls = []

    def flaky(obs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("checkpoint expects 8 action dims")
        return {"actions": np.zeros((10, 8))}

    with LoopbackOpenpiServer(flaky) as server:
        policy = _droid_policy(droid_robot, server.url)
        obs = observation(droid_robot, _images(droid_robot))
        with pytest.raises(PolicyServerError, match="inference failed: ValueError: checkpoint expects 8") as info:
            policy.infer(obs)
        assert "Traceback" in info.value.detail
        assert policy.infer(obs).actions.shape == (10, 8)
        assert server.connections == 2


def test_reconnects_after_the_server_restarts(droid_robot):
    reply = {"actions": np.zeros((10, 8))}
    first = LoopbackOpenpiServer(lambda obs: reply)
    policy = _droid_policy(droid_robot, first.url, backoff={"initial_s": 0.02, "factor": 2.0, "max_s": 0.2})
    obs = observation(droid_robot, _images(droid_robot))
    policy.infer(obs)
    port = first.port
    first.stop()

    # The replacement comes up 0.3 s later on the same port; infer() must ride out the gap with backoff.
    holder = {}

    def restart():
        holder["server"] = LoopbackOpenpiServer(lambda o: reply, port=port)

    starter = threading.Timer(0.3, restart)
    starter.start()
    try:
        chunk = policy.infer(obs)
    finally:
        starter.join()  # the new server may answer before its constructor has returned
    try:
        assert chunk.actions.shape == (10, 8)
        assert len(holder["server"].received) == 1
    finally:
        holder["server"].stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeClock:
    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_server_down_raises_after_the_budget_with_capped_exponential_backoff():
    clock = FakeClock()
    space = ActionSpace(kind="joint_pos", arms=("arm",), joints_per_arm=(1,), gripper=None)
    policy = OpenpiWebsocketPolicy(f"ws://127.0.0.1:{_free_port()}", name="down", request={}, action_space=space,
                                   horizon=1, rate_hz=10.0, reconnect_budget_s=5.0,
                                   backoff=Backoff(initial_s=0.1, factor=2.0, max_s=1.0), clock=clock,
                                   sleep=clock.sleep)
    from vla_ros.core.types import Observation

    with pytest.raises(PolicyUnavailableError, match=r"unreachable for 5\.0 s \(ConnectionRefusedError"):
        policy.infer(Observation({}, {}, "", 0.0))
    assert clock.sleeps[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    assert all(s <= 1.0 for s in clock.sleeps) and sum(clock.sleeps) == pytest.approx(5.0)


def test_no_reply_within_the_timeout_raises_and_drops_the_connection(droid_robot):
    def slow(obs):
        time.sleep(0.5)
        return {"actions": np.zeros((10, 8))}

    with LoopbackOpenpiServer(slow) as server:
        policy = _droid_policy(droid_robot, server.url, infer_timeout_s=0.1)
        started = time.monotonic()
        with pytest.raises(PolicyUnavailableError, match=r"no reply within 0\.1 s"):
            policy.infer(observation(droid_robot, _images(droid_robot)))
        assert time.monotonic() - started < 0.45
        assert policy._connection is None  # the late reply must not answer the next request


@pytest.mark.parametrize("reply, message", [
    ({"actions": np.zeros((9, 8))}, r"shape \(9, 8\), expected \(10, 8\)"),
    ({"actions": np.zeros((10, 7))}, r"shape \(10, 7\), expected \(10, 8\)"),
    ({"action": np.zeros((10, 8))}, "no 'actions'"),
    ({"actions": np.full((10, 8), np.nan)}, "non-finite action at step 0, column 0"),
])
def test_bad_replies_raise_bad_chunk(droid_robot, reply, message):
    with LoopbackOpenpiServer(lambda obs: dict(reply)) as server:
        policy = _droid_policy(droid_robot, server.url, actions={})  # no clip: NaN must reach the check
        with pytest.raises(BadChunkError, match=message):
            policy.infer(observation(droid_robot, _images(droid_robot)))


def test_a_server_that_does_not_speak_openpi_is_named(droid_robot):
    with LoopbackOpenpiServer(lambda obs: {}, first_frame="hello") as server:
        policy = _droid_policy(droid_robot, server.url)
        with pytest.raises(PolicyServerError, match="first frame is not msgpack metadata"):
            policy.connect()


def test_action_transform_order_clip_binarize_scale():
    transform = ActionTransform(clip=(-1.0, 1.0), binarize=((1, 0.5),), scale=np.array([2.0, 1.0]))
    out = transform(np.array([[3.0, 0.7], [-0.25, 0.5]]))
    np.testing.assert_array_equal(out, [[2.0, 1.0], [-0.5, 0.0]])
