"""What every remote-policy client owes the policy worker: shipped configs build on their robots, a bad server is a
one-line error the worker counts (the worker and the next request survive), and the shared state parts (EE pose by
forward kinematics, constants, scaled joints) that the new configs use."""

from __future__ import annotations

import json
import threading
import time

import json_numpy
import numpy as np
import pytest

from policies_helpers import camera_images, observation, shipped_policy
from vla_ros.peer_servers import LoopbackGr00tServer, LoopbackLeRobotServer, LoopbackOpenVLAServer
from vla_ros.core.config import Section
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import PolicyUnavailableError, make_policy
from vla_ros.core.policies.preprocess import parse_state, state_vector, state_width
from vla_ros.core.policy_worker import PolicyWorker
from vla_ros.core.robot import load_robot
from vla_ros.core.rotations import from_matrix
from vla_ros.core.types import Observation

SHIPPED = {
    "openvla_oft_aloha": "aloha", "openvla_oft_bridge": "widowx", "gr00t_n15_aloha": "aloha",
    "gr00t_n16_widowx": "widowx", "lerobot_async_act_aloha": "aloha", "octo_widowx": "widowx",
    "crossformer_aloha": "aloha",
}


@pytest.fixture(scope="module")
def robots():
    return {name: load_robot(name) for name in ("aloha", "widowx", "franka")}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_configs_build_on_their_robot_and_name_the_mismatch_on_another(robots, name):
    policy = make_policy(name, robot=robots[SHIPPED[name]])
    assert policy.metadata.name and policy.metadata.horizon >= 1
    other = "widowx" if SHIPPED[name] == "aloha" else "aloha"
    with pytest.raises(ConfigError, match=f"robot {other} has no arm|is not a camera of robot {other}"):
        make_policy(name, robot=robots[other])



def _run(worker: PolicyWorker, obs, timeout: float = 10.0):
    assert worker.request(obs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = worker.poll()
        if results:
            return results[0]
        time.sleep(0.01)
    raise AssertionError("no result")


def _fails_once(bad, good):
    """A server-side policy whose first answer is `bad()` (which may raise), then `good()`."""
    calls = []

    def policy(request):
        calls.append(request)
        return bad() if len(calls) == 1 else good()

    return policy


def _raise(message):
    def fail():
        raise ValueError(message)
    return fail


def _oft_server():
    reply = _fails_once(lambda: json.dumps("error"), lambda: json_numpy.dumps(list(np.zeros((25, 14)))))
    server = LoopbackOpenVLAServer(reply)
    return server, {"url": server.url}


def _gr00t_reply():
    return {"action.left_arm": np.zeros((16, 6)), "action.left_gripper": np.ones(16),
            "action.right_arm": np.zeros((16, 6)), "action.right_gripper": np.ones(16)}


def _gr00t_server():
    server = LoopbackGr00tServer(_fails_once(_raise("state.left_arm has 5 dims, expected 6"), _gr00t_reply))
    return server, {"url": server.url}


def _lerobot_server():
    server = LoopbackLeRobotServer(_fails_once(lambda: np.zeros((50, 14)), lambda: np.zeros((100, 14))))
    return server, {"address": server.address}


@pytest.mark.parametrize("name, make_server", [("openvla_oft_aloha", _oft_server), ("gr00t_n15_aloha", _gr00t_server),
                                               ("lerobot_async_act_aloha", _lerobot_server)])
def test_worker_counts_a_bad_server_and_serves_the_next_request(robots, name, make_server):
    aloha = robots["aloha"]
    obs = observation(aloha, camera_images(aloha))
    server, overrides = make_server()
    policy = shipped_policy(name, aloha, **overrides)
    with server, PolicyWorker(policy, clock=time.monotonic, inference_timeout=10.0) as worker:
        failed = _run(worker, obs)
        assert failed.chunk is None and failed.error.startswith(f"policy {policy.metadata.name}: infer raised ")
        assert "\n" not in failed.error
        served = _run(worker, obs)
        assert served.error is None and served.chunk.horizon == policy.metadata.horizon
        assert worker.stats()["errors"] == 1 and worker.stats()["completed"] == 1


@pytest.mark.parametrize("name, make_server", [
    ("gr00t_n15_aloha", lambda: LoopbackGr00tServer(lambda data: _gr00t_reply(), delay_s=0.5)),
    ("lerobot_async_act_aloha", lambda: LoopbackLeRobotServer(lambda obs: np.zeros((100, 14)), delay_s=0.5)),
])
def test_a_second_call_while_one_waits_is_refused_not_interleaved(robots, name, make_server):
    """The worker abandons a slow call and may ask again while it still waits: the client refuses at once rather
    than share its socket (ZeroMQ) or let the server answer into the abandoned call (LeRobot)."""
    aloha = robots["aloha"]
    obs = observation(aloha, camera_images(aloha))
    with make_server() as server:
        policy = shipped_policy(name, aloha, **({"url": server.url} if hasattr(server, "url") else
                                                {"address": server.address}))
        slow = threading.Thread(target=policy.infer, args=(obs,))
        slow.start()
        time.sleep(0.2)
        with pytest.raises(PolicyUnavailableError, match="the previous request is still waiting for its reply"):
            policy.infer(obs)
        slow.join()
        assert policy.infer(obs).horizon == policy.metadata.horizon


# --- state parts -----------------------------------------------------------------------------------------------------


def _parts(items, robot):
    return parse_state(Section({"s": items}, "x.yaml").sections("s"), robot)


@pytest.mark.parametrize("rotation", ["rpy", "axis_angle", "quat"])
def test_ee_pose_state_is_forward_kinematics_in_the_base_frame(robots, rotation):
    franka = robots["franka"]
    q = franka.home.copy()
    q[:7] += np.linspace(-0.3, 0.3, 7)
    parts = _parts([{"ee": "arm", "rotation": rotation}, {"constant": -2.0},
                    {"joints": ["panda_finger_joint1"], "scale": -1.0}], franka)
    values = state_vector(parts, Observation({}, dict(zip(franka.joint_names, q)), "", 0.0), "p")
    pose = franka.fk(q, franka.arm("arm").ee_frame)
    expected = np.concatenate([pose.translation, from_matrix(rotation, pose.rotation), [-2.0, -q[7]]])
    assert state_width(parts) == len(values) == len(expected)
    np.testing.assert_allclose(values, expected, atol=1e-6)


def test_ee_components_select_columns_and_errors_name_the_field(robots):
    widowx = robots["widowx"]
    parts = _parts([{"ee": "arm", "components": ["yaw", "x"]}], widowx)
    values = state_vector(parts, Observation({}, dict(zip(widowx.joint_names, widowx.home)), "", 0.0), "p")
    pose = widowx.fk(widowx.home, widowx.arm("arm").ee_frame)
    np.testing.assert_allclose(values, [from_matrix("rpy", pose.rotation)[2], pose.translation[0]], atol=1e-6)
    with pytest.raises(ConfigError, match=r"s\[0\]\.components: expected a non-empty list of x, y, z, qx, qy, qz, "
                                          r"qw \(rotation quat\), got \['roll'\]"):
        _parts([{"ee": "arm", "rotation": "quat", "components": ["roll"]}], widowx)
    with pytest.raises(ConfigError, match=r"s\[0\]: expected exactly one of arm, joints, gripper, ee, constant"):
        _parts([{"ee": "arm", "constant": 1.0}], widowx)
    with pytest.raises(ConfigError, match=r"s\[0\]\.ee: needs a robot model"):
        _parts([{"ee": "arm"}], None)
    from vla_ros.core.policies import ObservationError

    with pytest.raises(ObservationError, match="observation has no position for joint 'waist'"):
        state_vector(parts, Observation({}, {}, "", 0.0), "p")
