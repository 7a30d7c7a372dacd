"""LeRobot async-inference client: our protobuf messages against LeRobot's wire format, the pickles LeRobot's server
reads and writes, the restricted unpickler, and the gRPC protocol against a loopback server built from LeRobot's
definitions. Optionally (not in CI) against LeRobot's own policy_server with a LeRobot-written checkpoint."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from policies_helpers import camera_images, changed_config, observation, shipped_policy
from vla_ros.peer_servers import LoopbackLeRobotServer, LoopbackOpenVLAServer
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import PolicyServerError, PolicyUnavailableError, make_policy
from vla_ros.core.policies import lerobot_async_pb2 as pb
from vla_ros.core.policies.lerobot_async import CHUNK_BYTES, observation_chunks
from vla_ros.core.policies.lerobot_pickle import ForbiddenPickleError, dump_lerobot_dataclass, load_timed_actions
from vla_ros.core.robot import load_robot
from vla_ros.core.types import BadChunkError
from vla_ros.resources import policy_config_dir

POLICIES = Path(__file__).resolve().parents[1] / "vla_ros" / "core" / "policies"


@pytest.fixture(scope="module")
def aloha():
    return load_robot("aloha")


def _policy(robot, address: str, **overrides):
    return shipped_policy("lerobot_async_act_aloha", robot, address=address, **overrides)



def _zero_chunk(steps: int = 100, width: int = 14):
    return lambda obs: np.zeros((steps, width))


# --- wire format ---------------------------------------------------------------------------------------------------


def test_committed_pb2_is_what_grpc_tools_generates(tmp_path):
    from grpc_tools import protoc

    root = POLICIES.parents[2]
    relative = "vla_ros/core/policies/lerobot_async.proto"
    assert protoc.main(["protoc", f"-I{root}", f"--python_out={tmp_path}", str(root / relative)]) == 0
    assert (tmp_path / "vla_ros/core/policies/lerobot_async_pb2.py").read_text() == \
        (POLICIES / "lerobot_async_pb2.py").read_text()


def test_messages_encode_with_lerobots_field_numbers():
    # LeRobot's services.proto: Observation {TransferState transfer_state = 1; bytes data = 2;}, Actions and
    # PolicySetup {bytes data = 1;}, TRANSFER_BEGIN / MIDDLE / END = 1 / 2 / 3. Tag byte = field << 3 | wire type.
    assert pb.Observation(transfer_state=pb.TRANSFER_END, data=b"ab").SerializeToString() == b"\x08\x03\x12\x02ab"
    assert pb.Observation(transfer_state=pb.TRANSFER_BEGIN, data=b"").SerializeToString() == b"\x08\x01"
    assert pb.TRANSFER_MIDDLE == 2
    assert pb.Actions(data=b"xyz").SerializeToString() == b"\x0a\x03xyz"
    assert pb.PolicySetup(data=b"q").SerializeToString() == b"\x0a\x01q"
    assert pb.Empty().SerializeToString() == b""
    assert pb.Actions.FromString(b"").data == b""  # what an Empty reply to GetActions decodes to


@pytest.mark.parametrize("size, expected", [
    (1, [(pb.TRANSFER_END, 1)]),
    (CHUNK_BYTES, [(pb.TRANSFER_END, CHUNK_BYTES)]),
    (CHUNK_BYTES + 1, [(pb.TRANSFER_BEGIN, CHUNK_BYTES), (pb.TRANSFER_END, 1)]),
    (2 * CHUNK_BYTES + 5, [(pb.TRANSFER_BEGIN, CHUNK_BYTES), (pb.TRANSFER_MIDDLE, CHUNK_BYTES),
                           (pb.TRANSFER_END, 5)]),
])
def test_observations_are_chunked_like_send_bytes_in_chunks(size, expected):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    chunks = list(observation_chunks(payload))
    assert [(c.transfer_state, len(c.data)) for c in chunks] == expected
    assert b"".join(c.data for c in chunks) == payload


# --- pickles -------------------------------------------------------------------------------------------------------


def test_written_pickles_build_lerobots_dataclasses():
    with LoopbackLeRobotServer(_zero_chunk()) as server:  # registers lerobot.async_inference.helpers' stand-in
        helpers = server.helpers
        image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)  # several pickle frames
        raw = {"waist.pos": 0.5, "top": image, "task": "stack"}
        observation_ = pickle.loads(dump_lerobot_dataclass(
            "TimedObservation", {"timestamp": 2.5, "timestep": 7, "observation": raw, "must_go": True}))
        config = pickle.loads(dump_lerobot_dataclass("RemotePolicyConfig", {
            "policy_type": "act", "pretrained_name_or_path": "user/model", "lerobot_features": {"f": 1},
            "actions_per_chunk": 50, "device": "cuda", "rename_map": {}}))
    assert type(observation_) is helpers.TimedObservation
    assert (observation_.timestamp, observation_.timestep, observation_.must_go) == (2.5, 7, True)
    assert observation_.observation["waist.pos"] == 0.5 and observation_.observation["task"] == "stack"
    np.testing.assert_array_equal(observation_.observation["top"], image)
    assert config == helpers.RemotePolicyConfig("act", "user/model", {"f": 1}, 50, "cuda", {})


def _timed_actions_pickle(actions) -> bytes:
    with LoopbackLeRobotServer(_zero_chunk()) as server:
        return pickle.dumps([server.helpers.TimedAction(1.0 + i / 50, 3 + i, a) for i, a in enumerate(actions)])


def test_restricted_unpickler_reads_tensor_and_array_chunks():
    chunk = torch.arange(28, dtype=torch.float32).reshape(2, 14)
    actions = load_timed_actions(_timed_actions_pickle(list(chunk)))  # rows: views into one shared storage
    assert [(a.timestamp, a.timestep) for a in actions] == [(1.0, 3), (1.02, 4)]
    np.testing.assert_array_equal(np.stack([a.action for a in actions]), chunk.numpy())
    numpy_actions = load_timed_actions(_timed_actions_pickle([np.ones(3), np.zeros(3)]))
    np.testing.assert_array_equal(numpy_actions[0].action, np.ones(3))


class _Exploit:
    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return os.system, (f"touch {self.canary}",)


def test_restricted_unpickler_refuses_everything_else(tmp_path):
    canary = tmp_path / "pwned"
    with pytest.raises(ForbiddenPickleError, match=r"refused global (posix|os)\.system"):
        load_timed_actions(pickle.dumps([_Exploit(canary)]))
    with pytest.raises(ForbiddenPickleError, match="refused global builtins.eval"):
        load_timed_actions(pickle.dumps(eval))
    with pytest.raises(ForbiddenPickleError, match="payload is dict, expected a list of TimedAction"):
        load_timed_actions(pickle.dumps({"a": 1}))
    with pytest.raises(ForbiddenPickleError, match="payload is a list of other objects"):
        load_timed_actions(pickle.dumps([1.0, 2.0]))
    # a TimedAction carrying an exploit in its state still cannot reach os.system
    with LoopbackLeRobotServer(_zero_chunk()) as server:
        payload = pickle.dumps([server.helpers.TimedAction(0.0, 0, _Exploit(canary))])
    with pytest.raises(ForbiddenPickleError, match="refused global"):
        load_timed_actions(payload)
    assert not canary.exists()


# --- protocol against the loopback server ---------------------------------------------------------------------------


def test_round_trip_handshake_observation_and_chunk(aloha):
    chunk = np.random.default_rng(3).uniform(-1, 1, (100, 14))
    with LoopbackLeRobotServer(lambda obs: chunk, fps=50.0) as server:
        policy = _policy(aloha, server.address)
        q = aloha.home.copy()
        q[aloha.arm("left").index[0]] = 0.3
        first = policy.infer(observation(aloha, camera_images(aloha), q=q, instruction="transfer the cube", stamp=12.0))
        second = policy.infer(observation(aloha, camera_images(aloha), q=q, stamp=12.5))
        calls = list(server.calls)
        config, observations = server.configs[0], server.observations
    # LeRobot's robot_client order: Ready, SendPolicyInstructions once, then observation / actions pairs
    assert calls == ["Ready", "SendPolicyInstructions", "SendObservations", "GetActions", "SendObservations",
                     "GetActions"]
    assert (config.policy_type, config.pretrained_name_or_path, config.actions_per_chunk, config.device) == \
        ("act", "lerobot/act_aloha_sim_transfer_cube_human", 100, "cuda")
    state_feature = config.lerobot_features["observation.state"]
    assert state_feature["dtype"] == "float32" and state_feature["shape"] == (14,)
    assert state_feature["names"][0] == "follower_left/waist.pos"
    assert state_feature["names"][6] == "follower_left/left_finger.gripper"
    assert config.lerobot_features["observation.images.top"] == {
        "dtype": "image", "shape": (480, 640, 3), "names": ["height", "width", "channels"]}
    sent = observations[0]
    assert (sent.timestamp, sent.timestep, sent.must_go) == (12.0, 0, True)
    assert observations[1].timestep == 1
    raw = sent.observation
    # the server's build_dataset_frame reads the state by these names, the image by the key after images.
    assert [raw[name] for name in state_feature["names"]][0] == pytest.approx(0.3)
    assert raw["top"].shape == (480, 640, 3) and raw["top"].dtype == np.uint8 and raw["task"] == "transfer the cube"
    np.testing.assert_allclose(first.actions, chunk, rtol=1e-6)  # float32 on the wire
    assert first.stamp == 12.0 and first.dt == pytest.approx(0.02) and second.stamp == 12.5
    assert first.info["server_dt"] == pytest.approx(0.02)


def test_large_observations_are_streamed_in_chunks(aloha):
    with LoopbackLeRobotServer(_zero_chunk()) as server:
        big = {c.name: np.zeros((1080, 1920, 3), np.uint8) for c in aloha.cameras}  # cam_high: 6.2 MB pickled
        _policy(aloha, server.address).infer(observation(aloha, big))
        chunks = list(server.chunk_states)
    assert [state for state, _ in chunks] == [pb.TRANSFER_BEGIN, pb.TRANSFER_MIDDLE, pb.TRANSFER_END]
    assert [size for _, size in chunks[:2]] == [CHUNK_BYTES, CHUNK_BYTES]


def _raise(obs):
    raise RuntimeError("CUDA out of memory")


@pytest.mark.parametrize("server_kwargs, error, message", [
    ({"policy": _raise}, PolicyServerError,
     r"LeRobot policy server 127\.0\.0\.1:\d+: GetActions failed \(UNKNOWN\): .*"),
    ({"policy": _zero_chunk(), "reply_data": pickle.dumps(eval)}, PolicyServerError,
     r"GetActions payload refused: refused global builtins\.eval"),
    ({"policy": _zero_chunk(), "reply_data": b"\x80\x04not a pickle"}, PolicyServerError,
     r"GetActions payload is not a pickled TimedAction list \(UnpicklingError"),
    ({"policy": _zero_chunk(99)}, BadChunkError, r"shape \(99, 14\), expected \(100, 14\)"),
    ({"policy": _zero_chunk(100, 7)}, BadChunkError, r"shape \(100, 7\), expected \(100, 14\)"),
    ({"policy": lambda obs: np.full((100, 14), np.inf)}, BadChunkError, "non-finite action at step 0, column 0"),
])
def test_bad_servers_are_one_line_errors(aloha, server_kwargs, error, message):
    with LoopbackLeRobotServer(**server_kwargs) as server:
        with pytest.raises(error, match=message) as info:
            _policy(aloha, server.address).infer(observation(aloha, camera_images(aloha)))
    assert "\n" not in str(info.value)


def test_empty_actions_then_the_next_call_hands_over_the_policy_again(aloha):
    # the server produced nothing (its observation queue timed out, or inference failed and it logged the error)
    with LoopbackLeRobotServer(_zero_chunk(), reply_data=b"") as server:
        policy = _policy(aloha, server.address)
        with pytest.raises(PolicyServerError, match=r"GetActions returned no actions for observation #0"):
            policy.infer(observation(aloha, camera_images(aloha)))
        server.reply_data = None
        assert policy.infer(observation(aloha, camera_images(aloha))).horizon == 100
        calls = list(server.calls)
    assert calls.count("Ready") == 2 and calls.count("SendPolicyInstructions") == 2


def test_an_answer_to_another_observation_is_stale(aloha):
    def other_timesteps(obs):
        obs.timestep += 5  # as if it answered an earlier observation of another client
        return np.zeros((100, 14))

    with LoopbackLeRobotServer(other_timesteps) as server:
        with pytest.raises(BadChunkError, match=r"answered timesteps 5\.\.104, expected the chunk for observation #0"):
            _policy(aloha, server.address).infer(observation(aloha, camera_images(aloha)))


def test_unsupported_policy_type_names_the_call(aloha, tmp_path):
    with LoopbackLeRobotServer(_zero_chunk()) as server:
        policy = _policy(aloha, server.address)
        policy.policy_type = "octo"
        with pytest.raises(PolicyServerError, match=r"SendPolicyInstructions failed \(UNKNOWN\): .*octo"):
            policy.infer(observation(aloha, camera_images(aloha)))


def test_server_down_and_slow_server(aloha):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(PolicyUnavailableError, match=rf"LeRobot policy server 127\.0\.0\.1:{port}: Ready: "
                                                     r"(unreachable|no reply within 0\.5 s)"):
        _policy(aloha, f"127.0.0.1:{port}", connect_timeout_s=0.5).infer(observation(aloha, camera_images(aloha)))
    assert time.monotonic() - started < 3.0
    with LoopbackLeRobotServer(_zero_chunk(), delay_s=0.6) as server:
        policy = _policy(aloha, server.address, infer_timeout_s=0.3)
        with pytest.raises(PolicyUnavailableError, match=r"GetActions: no reply within 0\.\d s"):
            policy.infer(observation(aloha, camera_images(aloha)))
        server.delay_s = 0.0
        time.sleep(0.7)
        assert policy.infer(observation(aloha, camera_images(aloha))).horizon == 100
        assert server.calls.count("Ready") == 2  # re-handshake: Ready discards the abandoned GetActions' queue


def test_loading_the_policy_has_its_own_timeout(aloha):
    with LoopbackLeRobotServer(_zero_chunk(), load_delay_s=0.5) as server:
        policy = _policy(aloha, server.address, infer_timeout_s=0.3)
        assert policy.infer(observation(aloha, camera_images(aloha))).horizon == 100
    with LoopbackLeRobotServer(_zero_chunk(), load_delay_s=0.5) as server:
        with pytest.raises(PolicyUnavailableError, match=r"SendPolicyInstructions: no reply within 0\.2 s"):
            _policy(aloha, server.address, load_timeout_s=0.2).infer(observation(aloha, camera_images(aloha)))


def test_not_a_lerobot_server(aloha):
    import grpc
    from concurrent import futures

    other = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        with pytest.raises(PolicyServerError, match=r"Ready: not implemented here; is this a LeRobot async-inference "
                                                    r"policy_server"):
            _policy(aloha, f"127.0.0.1:{port}").infer(observation(aloha, camera_images(aloha)))
    finally:
        other.stop(None)


def test_an_http_server_is_named(aloha):
    with LoopbackOpenVLAServer("{}") as http_server:
        address = http_server.url.removeprefix("http://").removesuffix("/act")
        with pytest.raises(PolicyServerError, match=rf"LeRobot policy server {address}: Ready: the server answers, "
                                                    r"but not with gRPC \(.*\); is this a LeRobot") as info:
            _policy(aloha, address, connect_timeout_s=2.0).infer(observation(aloha, camera_images(aloha)))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change, message", [
    ({"address": "http://127.0.0.1:8080"}, r"address: expected host:port"),
    ({"policy_type": "octo"}, "policy_type: expected one of act, smolvla, diffusion"),
    ({"cameras": {"top": "front"}}, r"cameras\.top: camera 'front' is not a camera of robot aloha"),
    ({"state": [{"arm": "left"}, {"arm": "left"}]}, "state: state entries repeat"),
])
def test_config_errors(aloha, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        make_policy(changed_config("lerobot_async_act_aloha", tmp_path, **change), robot=aloha)


# --- against LeRobot's own policy_server (not in CI) ----------------------------------------------------------------

LEROBOT_PYTHON = os.environ.get("VLA_ROS_LEROBOT_PYTHON")
LEROBOT_CHECKPOINT = os.environ.get("VLA_ROS_LEROBOT_ACT_ALOHA")


@pytest.mark.skipif(not (LEROBOT_PYTHON and LEROBOT_CHECKPOINT),
                    reason="set VLA_ROS_LEROBOT_PYTHON (an interpreter with lerobot 0.4.x and grpcio) and "
                           "VLA_ROS_LEROBOT_ACT_ALOHA (a LeRobot ACT ALOHA checkpoint dir: pretrained_model/ and "
                           "reference.npz with LeRobot's chunks for its inputs)")
def test_against_lerobots_policy_server(aloha, tmp_path):
    checkpoint = Path(LEROBOT_CHECKPOINT)
    reference = np.load(checkpoint / "reference.npz")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path / "server.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [LEROBOT_PYTHON, "-W", "ignore", "-m", "lerobot.async_inference.policy_server", "--host=127.0.0.1",
         f"--port={port}", "--fps=50", "--inference_latency=0", "--obs_queue_timeout=5"],
        cwd=tmp_path, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        config = yaml.safe_load((policy_config_dir() / "lerobot_async_act_aloha.yaml").read_text())
        left, right = aloha.arm("left"), aloha.arm("right")
        config.update(address=f"127.0.0.1:{port}", pretrained_name_or_path=str(checkpoint / "pretrained_model"),
                      device="cpu", horizon=10, cameras={"cam_high": "cam_high", "cam_left_wrist": "cam_left_wrist"},
                      # raw finger positions, so the reference state vector can be fed exactly
                      state=[{"arm": "left"}, {"joints": [left.gripper.joint]}, {"arm": "right"},
                             {"joints": [right.gripper.joint]}], load_timeout_s=120.0, infer_timeout_s=60.0)
        policy = make_policy(config, robot=aloha)
        names = left.joints + (left.gripper.joint,) + right.joints + (right.gripper.joint,)
        for i in range(len(reference["chunks"])):
            state = reference["input/observation.state"][i]
            images = {"cam_high": reference["input/observation.images.cam_high"][i],
                      "cam_left_wrist": reference["input/observation.images.cam_left_wrist"][i]}
            obs = observation(aloha, images, q=aloha.vector_from(names, state, default=aloha.home), stamp=float(i))
            chunk = policy.infer(obs)
            np.testing.assert_allclose(chunk.actions, reference["chunks"][i], atol=1e-4)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert "Error" not in log_path.read_text(), log_path.read_text()[-2000:]
