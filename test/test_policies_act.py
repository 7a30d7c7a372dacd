"""ACT network + local torch backend: every artifact format loads and gives the same chunk; normalisation is
applied as configured; bad files and shapes give one clear error."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from policies_helpers import observation
from vla_ros.core.errors import ConfigError
from vla_ros.core.policies import ObservationError, make_policy
from vla_ros.core.policies.act import ACTConfig, ACTNetwork
from vla_ros.core.types import BadChunkError

CAMERAS = ("cam_high", "cam_left_wrist")
# Loading TorchScript is deprecated in torch 2.13 but still what many exported checkpoints are.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def tiny_config(**overrides) -> ACTConfig:
    rng = np.random.default_rng(0)
    fields = dict(
        cameras=CAMERAS, image_size=(24, 32), state_dim=14, action_dim=14, chunk_size=5, d_model=16, n_heads=2,
        n_encoder_layers=1, n_decoder_layers=1, dim_feedforward=32, dropout=0.0, backbone_channels=(8, 16),
        state_mean=tuple(rng.normal(0, 0.5, 14)), state_std=tuple(rng.uniform(0.5, 2.0, 14)),
        action_mean=tuple(rng.normal(0, 0.5, 14)), action_std=tuple(rng.uniform(0.1, 3.0, 14)),
    )
    fields.update(overrides)
    return ACTConfig(**fields).check()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """One randomly initialised tiny network saved as state dict + JSON config, TorchScript and torch.export."""
    directory = tmp_path_factory.mktemp("act")
    torch.manual_seed(0)
    config = tiny_config()
    network = ACTNetwork(config).eval()
    torch.save(network.state_dict(), directory / "model.pt")
    (directory / "act_config.json").write_text(json.dumps(config.to_dict()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated, still loadable
        torch.jit.script(network).save(str(directory / "model.ts"))
    example = (torch.rand(1, len(CAMERAS), 3, 24, 32), torch.rand(1, 14))
    torch.export.save(torch.export.export(network, example), str(directory / "model.pt2"))
    return directory, network, config


def policy_config(directory, fmt: str, **overrides) -> dict:
    config = {
        "backend": "torch_local", "name": "act_tiny", "format": fmt, "device": "cpu", "rate_hz": 50.0,
        "artifact": str(directory / {"state_dict": "model.pt", "torchscript": "model.ts", "export": "model.pt2"}[fmt]),
        "state": [{"arm": "left"}, {"gripper": "left"}, {"arm": "right"}, {"gripper": "right"}],
        "action_space": {"kind": "joint_pos", "arms": ["left", "right"]},
    }
    config["model"] = str(directory / "act_config.json")
    config.update(overrides)
    return config


def aloha_observation(robot, seed=0):
    rng = np.random.default_rng(seed)
    images = {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in robot.cameras}
    q = rng.uniform(robot.limits.lower, robot.limits.upper)
    return observation(robot, images, q=q, stamp=5.0)


def reference_output(network, robot, obs, config) -> np.ndarray:
    """The network run by hand on the observation: cv2 area resize, [0, 1] floats, grippers as openings."""
    import cv2

    images = np.stack([cv2.resize(obs.images[c], (32, 24), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
                       for c in config.cameras]).astype(np.float32) / np.float32(255.0)
    images = np.ascontiguousarray(images)  # a channels-last layout would pick other conv kernels (1e-7 apart)
    state = []
    for arm in ("left", "right"):
        spec = robot.arm(arm)
        state += [obs.joint_positions[j] for j in spec.joints]
        state.append(spec.gripper.opening(obs.joint_positions[spec.gripper.joint]))
    with torch.no_grad():
        out = network(torch.from_numpy(images)[None], torch.tensor([state], dtype=torch.float32))
    return out[0].double().numpy()


def test_state_dict_torchscript_and_export_give_the_same_chunk(artifacts, aloha):
    directory, network, config = artifacts
    obs = aloha_observation(aloha)
    expected = reference_output(network, aloha, obs, config)
    chunks = {fmt: make_policy(policy_config(directory, fmt), robot=aloha).infer(obs)
              for fmt in ("state_dict", "torchscript", "export")}
    np.testing.assert_array_equal(chunks["state_dict"].actions, expected)
    np.testing.assert_array_equal(chunks["torchscript"].actions, expected)
    np.testing.assert_allclose(chunks["export"].actions, expected, atol=1e-5)
    for chunk in chunks.values():
        assert chunk.actions.shape == (5, 14) and chunk.stamp == 5.0 and chunk.dt == pytest.approx(0.02)
        assert chunk.space.kind == "joint_pos" and chunk.space.arms == ("left", "right")


def test_metadata_comes_from_the_act_config(artifacts, aloha):
    directory, _, config = artifacts
    meta = make_policy(policy_config(directory, "state_dict"), robot=aloha).metadata
    assert meta.cameras == CAMERAS and meta.image_size == (24, 32) and meta.horizon == 5 and meta.rate_hz == 50.0
    assert meta.normalization["action_std"] == pytest.approx(list(config.action_std))


def test_statistics_normalise_state_and_unnormalise_actions():
    torch.manual_seed(1)
    config = tiny_config()
    with_stats = ACTNetwork(config).eval()
    identity = ACTNetwork(tiny_config(state_mean=None, state_std=None, action_mean=None, action_std=None)).eval()
    identity.load_state_dict(with_stats.state_dict())  # statistics are not in the state dict: same weights
    images, state = torch.rand(2, 2, 3, 24, 32), torch.randn(2, 14)
    mean, std, amean, astd = (torch.tensor(getattr(config, k), dtype=torch.float32)
                              for k in ("state_mean", "state_std", "action_mean", "action_std"))
    with torch.no_grad():
        expected = identity(images, (state - mean) / std) * astd + amean
        torch.testing.assert_close(with_stats(images, state), expected)
        # a zero output head predicts the normalised action 0, i.e. exactly the action mean
        with_stats.action_out.weight.zero_()
        with_stats.action_out.bias.fill_(1.0)
        torch.testing.assert_close(with_stats(images, state), (amean + astd).expand(2, 5, 14))


def test_wrong_shaped_state_dict_names_the_key_and_shapes(artifacts, aloha, tmp_path):
    directory, _, config = artifacts
    wrong = tiny_config(d_model=32, dim_feedforward=64)
    (tmp_path / "act_config.json").write_text(json.dumps(wrong.to_dict()))
    with pytest.raises(ConfigError, match=r"model\.pt: image_pos: shape \(24, 16\) in the checkpoint, but the ACT "
                                          r"config gives \(24, 32\)"):
        make_policy(policy_config(directory, "state_dict", model=str(tmp_path / "act_config.json")), robot=aloha)


def test_missing_and_unexpected_keys_and_non_state_dict_files(artifacts, aloha, tmp_path):
    directory, network, _ = artifacts
    state = network.state_dict()
    partial = {k: v for k, v in state.items() if k != "queries"}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match=r"partial\.pt: queries: missing from the checkpoint"):
        make_policy(policy_config(directory, "state_dict", artifact=str(tmp_path / "partial.pt")), robot=aloha)
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(ConfigError, match=r"extra\.pt: extra\.weight: in the checkpoint but not a parameter"):
        make_policy(policy_config(directory, "state_dict", artifact=str(tmp_path / "extra.pt")), robot=aloha)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk\.pt: not a torch state dict"):
        make_policy(policy_config(directory, "state_dict", artifact=str(tmp_path / "junk.pt")), robot=aloha)
    with pytest.raises(ConfigError, match=r"junk\.pt: not a TorchScript archive"):
        make_policy(policy_config(directory, "torchscript", artifact=str(tmp_path / "junk.pt")), robot=aloha)
    with pytest.raises(ConfigError, match=r"junk\.pt: not a torch.export program"):
        make_policy(policy_config(directory, "export", artifact=str(tmp_path / "junk.pt")), robot=aloha)
    with pytest.raises(ConfigError, match=r"absent\.pt: model weights file not found"):
        make_policy(policy_config(directory, "state_dict", artifact=str(tmp_path / "absent.pt")), robot=aloha)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_a_device_is_a_config_error(artifacts, aloha):
    directory, _, _ = artifacts
    with pytest.raises(ConfigError, match=r"device: 'cuda' requested but torch .* sees no CUDA device"):
        make_policy(policy_config(directory, "state_dict", device="cuda"), robot=aloha)
    with pytest.raises(ConfigError, match="device: expected cpu, cuda or cuda:N"):
        make_policy(policy_config(directory, "state_dict", device="tpu"), robot=aloha)


def test_config_disagreements_are_caught_before_loading(artifacts, aloha):
    directory, _, _ = artifacts
    with pytest.raises(ConfigError, match="state: gives 7 values, the ACT model config has state_dim 14"):
        make_policy(policy_config(directory, "state_dict", state=[{"arm": "left"}, {"gripper": "left"}]), robot=aloha)
    with pytest.raises(ConfigError, match=r"horizon: 8 disagrees with the ACT model config \(5\)"):
        make_policy(policy_config(directory, "state_dict", horizon=8), robot=aloha)
    with pytest.raises(ConfigError, match=r"model: missing \(a state dict needs the ACT config"):
        config = policy_config(directory, "state_dict")
        del config["model"]
        make_policy(config, robot=aloha)
    with pytest.raises(ConfigError, match="cameras: camera 'cam_top' is not a camera of robot aloha"):
        config = policy_config(directory, "torchscript", cameras=["cam_top"], image_size=[24, 32], horizon=5)
        del config["model"]
        make_policy(config, robot=aloha)


def test_act_config_validation():
    with pytest.raises(ConfigError, match="n_heads: d_model 16 must be divisible by n_heads 3"):
        tiny_config(n_heads=3)
    with pytest.raises(ConfigError, match="state_mean: state_mean / state_std have 2 / 14 values"):
        tiny_config(state_mean=(0.0, 0.0))
    with pytest.raises(ConfigError, match="action_std: every value must be positive"):
        tiny_config(action_std=(0.0,) * 14)
    with pytest.raises(ConfigError, match="chunk_sise: unknown key"):
        ACTConfig.from_mapping({**tiny_config().to_dict(), "chunk_sise": 3})
    assert ACTConfig.from_mapping(tiny_config().to_dict()) == tiny_config()


class WrongShape(torch.nn.Module):
    def forward(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, 3, 13)


def test_model_output_of_the_wrong_shape_is_a_bad_chunk(aloha, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(WrongShape()).save(str(tmp_path / "wrong.ts"))
    config = policy_config(tmp_path, "torchscript", artifact=str(tmp_path / "wrong.ts"), cameras=list(CAMERAS),
                           image_size=[24, 32], horizon=3)
    del config["model"]
    policy = make_policy(config, robot=aloha)
    with pytest.raises(BadChunkError, match=r"act_tiny: actions have shape \(3, 13\), expected \(3, 14\)"):
        policy.infer(aloha_observation(aloha))


def test_missing_camera_is_an_observation_error(artifacts, aloha):
    directory, _, _ = artifacts
    policy = make_policy(policy_config(directory, "state_dict"), robot=aloha)
    obs = aloha_observation(aloha)
    del obs.images["cam_left_wrist"]
    with pytest.raises(ObservationError, match="no image from camera 'cam_left_wrist'"):
        policy.infer(obs)
