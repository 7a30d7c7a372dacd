"""OpenVLA: de-tokenisation and BOUNDS_Q99 un-normalisation against hand-computed values of the published formula,
and the REST /act client against a loopback http.server."""

from __future__ import annotations

import json
import socket
import time

import json_numpy
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies_helpers import observation
from vla_ros.peer_servers import LoopbackOpenVLAServer
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import PolicyServerError, PolicyUnavailableError, make_policy
from vla_ros.core.policies.action_tokenizer import ActionDetokenizer, load_bounds_q99
from vla_ros.core.robot import load_robot
from vla_ros.core.types import BadChunkError
from vla_ros.resources import policy_config_dir

STATS = policy_config_dir() / "stats" / "bridge_orig.json"
LLAMA_VOCAB = 32000  # OpenVLA's Llama-2 tokenizer.vocab_size


def test_bin_edges_and_centres_follow_openvla():
    tokenizer = ActionDetokenizer(LLAMA_VOCAB)
    assert len(tokenizer.edges) == 256 and tokenizer.edges[0] == -1.0 and tokenizer.edges[-1] == 1.0
    assert len(tokenizer.centres) == 255
    # centre i = -1 + (2 i + 1) / 255
    np.testing.assert_allclose(tokenizer.centres[[0, 127, 128, 254]], [-254 / 255, 0.0, 2 / 255, 254 / 255],
                               atol=1e-15)


@pytest.mark.parametrize("token, value", [
    (31999, -254 / 255),  # bin index 32000 - 31999 - 1 = 0: the lowest centre
    (31872, 0.0),  # index 127
    (31871, 2 / 255),  # index 128
    (31873, -2 / 255),  # index 126
    (31745, 254 / 255),  # index 254: the highest centre
    (31744, 254 / 255),  # index 255 clips to 254 (digitize's top value has no interval of its own)
    (32000, -254 / 255),  # beyond the action range: clipped to the end bins
    (100, 254 / 255),
])
def test_token_ids_decode_to_hand_computed_centres(token, value):
    assert ActionDetokenizer(LLAMA_VOCAB).decode(np.array([token]))[0] == pytest.approx(value, abs=1e-15)


@given(st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=8))
def test_encode_then_decode_is_within_one_bin(actions):
    tokenizer = ActionDetokenizer(LLAMA_VOCAB)
    tokens = tokenizer.encode(np.array(actions))
    assert np.all((tokens >= LLAMA_VOCAB - 256) & (tokens < LLAMA_VOCAB))
    # digitize bins by edges and decoding returns the centre of that interval: at most one bin width away
    assert np.all(np.abs(tokenizer.decode(tokens) - np.array(actions)) <= 2 / 255 + 1e-12)


def test_bridge_orig_tokens_unnormalise_to_hand_computed_actions():
    bounds = load_bounds_q99(STATS, "bridge_orig")
    assert bounds.mask.tolist() == [True] * 6 + [False]
    tokens = np.array([31999, 31872, 31744, 31871, 31873, 31872, 31744])
    actions = bounds.unnormalize(ActionDetokenizer(LLAMA_VOCAB).decode(tokens))
    # a = 0.5 (n + 1)(q99 - q01) + q01 on dims 0-5, evaluated exactly (fractions) from the q01 / q99 values
    expected = [-0.02861541595879723, -0.0004241225123405891, 0.040031673989313475, 0.0011383076497151299,
                -0.008149109624764532, -0.0016785094141960888, 254 / 255]
    np.testing.assert_allclose(actions, expected, rtol=1e-12, atol=1e-15)


def test_statistics_files(tmp_path):
    with pytest.raises(ConfigError, match=r"bridge_orig\.json: fractal: no action statistics under this key "
                                          r"\(keys: bridge_orig\)"):
        load_bounds_q99(STATS, "fractal")
    # an OpenVLA checkpoint config.json keeps the same table under "norm_stats"
    config = {"norm_stats": json.loads(STATS.read_text()), "architectures": ["OpenVLAForActionPrediction"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_bounds_q99(tmp_path / "config.json", "bridge_orig").as_dict() == \
        load_bounds_q99(STATS, "bridge_orig").as_dict()
    (tmp_path / "bad.json").write_text(json.dumps({"k": {"action": {"q01": [0.0, 1.0], "q99": [1.0, 0.5]}}}))
    with pytest.raises(ConfigError, match="q99 > q01 on every masked dimension"):
        load_bounds_q99(tmp_path / "bad.json", "k")


# --- REST client against a loopback server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def widowx():
    return load_robot("widowx")


def _policy(robot, url, **overrides):
    import yaml

    config = yaml.safe_load((policy_config_dir() / "openvla_bridge.yaml").read_text())
    config.update(url=url, **overrides)
    return make_policy(config, robot=robot, source=policy_config_dir() / "openvla_bridge.yaml")


def _observation(robot):
    camera = robot.cameras[0]
    image = np.random.default_rng(0).integers(0, 256, (camera.height, camera.width, 3), dtype=np.uint8)
    return observation(robot, {camera.name: image}, instruction="Put the spoon on the towel", stamp=7.5)


ACTION = np.array([0.01, -0.02, 0.03, 0.05, -0.05, 0.1, 0.996])


@pytest.mark.parametrize("double_encode", [False, True])
def test_act_round_trip(widowx, double_encode):
    reply = (lambda p: json.dumps(json_numpy.dumps(ACTION))) if double_encode else (lambda p: json_numpy.dumps(ACTION))
    with LoopbackOpenVLAServer(reply) as server:
        chunk = _policy(widowx, server.url, double_encode=double_encode).infer(_observation(widowx))
    request = server.requests[0]
    assert request["path"] == "/act" and request["instruction"] == "Put the spoon on the towel"
    assert request["unnorm_key"] == "bridge_orig"
    assert request["image"].shape == (224, 224, 3) and request["image"].dtype == np.uint8
    np.testing.assert_array_equal(chunk.actions, ACTION[None, :])
    assert chunk.stamp == 7.5 and chunk.dt == pytest.approx(0.2) and chunk.horizon == 1
    assert chunk.space.kind == "ee_delta" and chunk.space.frame == "base" and chunk.space.gripper.open == 1.0


def test_server_error_reply_and_http_errors(widowx):
    with LoopbackOpenVLAServer(json.dumps("error")) as server:
        with pytest.raises(PolicyServerError, match="reported an error"):
            _policy(widowx, server.url).infer(_observation(widowx))
    with LoopbackOpenVLAServer("Internal Server Error", status=500) as server:
        with pytest.raises(PolicyServerError, match="HTTP 500"):
            _policy(widowx, server.url).infer(_observation(widowx))
    with LoopbackOpenVLAServer("{not json") as server:
        with pytest.raises(PolicyServerError, match="reply is not json_numpy"):
            _policy(widowx, server.url).infer(_observation(widowx))


def test_actions_outside_the_statistics_mean_a_wrong_unnorm_key(widowx):
    fractal_like = ACTION.copy()
    fractal_like[0] = 0.15  # far above bridge_orig q99 = 0.0283 for x
    with LoopbackOpenVLAServer(json_numpy.dumps(fractal_like)) as server:
        with pytest.raises(BadChunkError, match=r"action\[0\] = 0\.15 is outside bridge_orig .* \(check unnorm_key\)"):
            _policy(widowx, server.url).infer(_observation(widowx))


@pytest.mark.parametrize("reply, message", [
    (np.zeros(6), r"shape \(6,\), expected \(7,\)"),
    (np.zeros((1, 7)), r"shape \(1, 7\), expected \(7,\)"),
    (np.array([np.nan] * 7), "non-finite action at step 0, column 0"),
])
def test_malformed_actions_are_bad_chunks(widowx, reply, message):
    with LoopbackOpenVLAServer(json_numpy.dumps(reply)) as server:
        with pytest.raises(BadChunkError, match=message):
            _policy(widowx, server.url).infer(_observation(widowx))


def test_unreachable_and_slow_servers_raise_within_the_timeout(widowx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PolicyUnavailableError, match="unreachable"):
        _policy(widowx, f"http://127.0.0.1:{port}/act").infer(_observation(widowx))
    with LoopbackOpenVLAServer(json_numpy.dumps(ACTION), delay_s=0.6) as server:
        started = time.monotonic()
        with pytest.raises(PolicyUnavailableError, match=r"no reply within 0\.1 s"):
            _policy(widowx, server.url, timeout_s=0.1).infer(_observation(widowx))
        assert time.monotonic() - started < 0.5


def test_config_errors(widowx):
    with pytest.raises(ConfigError, match="url: expected http://host:port/act"):
        _policy(widowx, "ws://127.0.0.1:8000")
    with pytest.raises(ConfigError, match="stats: needs unnorm_key"):
        _policy(widowx, "http://127.0.0.1:1/act", unnorm_key=None)
    with pytest.raises(ConfigError, match="camera: camera 'wrist' is not a camera of robot widowx"):
        _policy(widowx, "http://127.0.0.1:1/act", camera="wrist")
