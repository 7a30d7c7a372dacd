"""Reading a LeRobot 0.4.x `pretrained_model/` directory without LeRobot: config, weights and normalisation stats.

A LeRobot 0.4 checkpoint directory holds
    config.json                     the policy config ("type": act | diffusion | ..., input_features /
                                    output_features {key: {type: VISUAL|STATE|ENV|ACTION, shape}}, ...)
    model.safetensors               the policy's state dict (`model.*` for ACT, `diffusion.*` for Diffusion)
    policy_preprocessor.json        the input pipeline; its `normalizer_processor` step names a state file
    policy_postprocessor.json       the output pipeline; its `unnormalizer_processor` step likewise
    policy_*_normalizer_processor.safetensors   flat stats "<feature>.<mean|std|min|max|q01|...>"
Normalisation follows LeRobot's NormalizerProcessorStep: the mode comes from the step's `norm_map` by feature
type; MEAN_STD: (x - mean) / (std + eps); MIN_MAX / QUANTILES / QUANTILE10: to [-1, 1] over (min, max),
(q01, q99), (q10, q90), a zero span replaced by eps. Where LeRobot silently passes a feature through because its
stats are missing, we refuse the checkpoint: on a robot that is a broken checkpoint, not a choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vla_ros.core.config import Section, load_json
from vla_ros.core.errors import ConfigError

FEATURE_TYPES = ("VISUAL", "STATE", "ENV", "ACTION", "LANGUAGE", "REWARD")
# mode -> the stats it reads as (low, high), or (mean, std)
NORM_STATS = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
              "QUANTILE10": ("q10", "q90")}
NORM_MODES = ("IDENTITY", *NORM_STATS)
# processor steps that do not change values on CPU inference of one observation (renaming is replaced by the
# policy YAML's feature mapping); any other step would transform data we do not replicate, so it is refused
PASSIVE_STEPS = ("rename_observations_processor", "to_batch_processor", "device_processor")


@dataclass(frozen=True)
class Feature:
    key: str  # e.g. observation.images.top, observation.state, action
    type: str  # VISUAL | STATE | ENV | ACTION
    shape: tuple[int, ...]


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(path, "", "file not found (not a LeRobot 0.4 pretrained_model directory?)")
    return load_json(path)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(path, "", "file not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(path, "", f"not a readable safetensors file: {str(exc).splitlines()[0]}") from None


def parse_features(section: Section, key: str) -> dict[str, Feature]:
    """`{feature key: {type, shape}}` in file order (LeRobot stacks cameras in this order)."""
    features = {}
    mapping = section.section(key)
    for name in mapping.data:
        item = mapping.section(name)
        kind = item.choice("type", FEATURE_TYPES)
        shape = item.floats("shape")
        if not shape or any(v < 1 or v != int(v) for v in shape):
            raise item.error("shape", f"expected positive whole numbers, got {shape}")
        features[name] = Feature(name, kind, tuple(int(v) for v in shape))
    return features


class Normaliser:
    """One direction of LeRobot's (un)normalisation for a set of features (see the module docstring)."""

    def __init__(self, modes: Mapping[str, str], stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]], eps: float):
        self.modes, self.stats, self.eps = dict(modes), dict(stats), eps

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mode = self.modes.get(key, "IDENTITY")
        if mode == "IDENTITY":
            return x
        a, b = self.stats[key]
        if mode == "MEAN_STD":
            return (x - a) / (b + self.eps)
        span = self._span(a, b)
        if mode == "MIN_MAX":
            return 2 * (x - a) / span - 1
        return 2.0 * (x - a) / span - 1.0

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mode = self.modes.get(key, "IDENTITY")
        if mode == "IDENTITY":
            return x
        a, b = self.stats[key]
        if mode == "MEAN_STD":
            return x * b + a
        span = self._span(a, b)
        if mode == "MIN_MAX":
            return (x + 1) / 2 * span + a
        return (x + 1.0) * span / 2.0 + a

    def _span(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        span = high - low
        return torch.where(span == 0, torch.tensor(self.eps, dtype=span.dtype), span)


def read_normaliser(directory: Path, pipeline_file: str, step_name: str, features: Mapping[str, Feature]) -> Normaliser:
    """The `step_name` step of a saved processor pipeline as a Normaliser over `features`."""
    path = directory / pipeline_file
    pipeline = Section(read_json(path), path)
    step_section = None
    for step in pipeline.sections("steps"):
        registry = step.str("registry_name", "")
        if registry == step_name:
            step_section = step
        elif registry not in PASSIVE_STEPS:
            raise step.error("registry_name", f"processor step {registry!r} is not supported (supported: "
                                              f"{', '.join((*PASSIVE_STEPS, step_name))})")
    if step_section is None:
        raise pipeline.error("steps", f"no {step_name!r} step: the checkpoint's normalisation is unknown")
    config = step_section.section("config")
    eps = config.float("eps", 1e-8)
    step_features = parse_features(config, "features")
    norm_map = config.section("norm_map")
    type_modes = {kind: norm_map.choice(kind, NORM_MODES) for kind in norm_map.data}
    stats_path = directory / step_section.str("state_file")
    flat = read_safetensors(stats_path)
    modes, stats = {}, {}
    for key, feature in features.items():
        if key not in step_features:
            continue  # not normalised by this step (LeRobot leaves such a feature unchanged)
        mode = type_modes.get(feature.type, "IDENTITY")
        modes[key] = mode
        if mode == "IDENTITY":
            continue
        pair = []
        for stat in NORM_STATS[mode]:
            tensor = flat.get(f"{key}.{stat}")
            if tensor is None:
                raise ConfigError(stats_path, f"{key}.{stat}", f"missing; {mode} normalisation of {key} "
                                                               f"({feature.type}) needs it")
            try:
                fits = torch.broadcast_shapes(tensor.shape, feature.shape) == feature.shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ConfigError(stats_path, f"{key}.{stat}", f"shape {tuple(tensor.shape)} does not fit feature "
                                                               f"{key} of shape {feature.shape} (config.json)")
            if not torch.isfinite(tensor).all():
                raise ConfigError(stats_path, f"{key}.{stat}", "contains non-finite values")
            pair.append(tensor.to(torch.float32))
        stats[key] = tuple(pair)
    return Normaliser(modes, stats, eps)


@dataclass
class Checkpoint:
    directory: Path
    config: Section  # config.json
    policy_type: str
    inputs: dict[str, Feature]
    outputs: dict[str, Feature]
    weights: dict[str, torch.Tensor]
    normalize_inputs: Normaliser
    unnormalize_outputs: Normaliser

    def features_of(self, kind: str) -> list[Feature]:
        return [f for f in self.inputs.values() if f.type == kind]


def read_checkpoint(directory: Path) -> Checkpoint:
    """Everything but the network: ConfigError naming the file and field for anything missing or malformed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(directory, "", "LeRobot checkpoint directory not found")
    config_path = directory / "config.json"
    config = Section(read_json(config_path), config_path)
    policy_type = config.str("type")
    inputs = parse_features(config, "input_features")
    outputs = parse_features(config, "output_features")
    if "action" not in outputs or outputs["action"].type != "ACTION" or len(outputs["action"].shape) != 1:
        raise config.error("output_features", "expected an 'action' feature of type ACTION with shape [dim]")
    pre = read_normaliser(directory, "policy_preprocessor.json", "normalizer_processor", inputs)
    post = read_normaliser(directory, "policy_postprocessor.json", "unnormalizer_processor", outputs)
    weights = read_safetensors(directory / "model.safetensors")
    return Checkpoint(directory, config, policy_type, inputs, outputs, weights, pre, post)


def load_weights(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], path: Path, prefix: str,
                 ignored_prefixes: tuple[str, ...] = ()) -> None:
    """Load the `prefix`ed `weights` into `module` by name, every key and shape checked: one ConfigError naming the
    first mismatch. Keys under `ignored_prefixes` (training-only parts) are accepted and dropped."""
    expected = module.state_dict()
    given = {}
    for key, tensor in weights.items():
        if not key.startswith(prefix):
            raise ConfigError(path, key, f"not a parameter of this policy type (expected every key under {prefix!r})")
        if not key.startswith(ignored_prefixes):
            given[key.removeprefix(prefix)] = tensor
    for key, tensor in expected.items():
        if key not in given:
            raise ConfigError(path, prefix + key, f"missing from the checkpoint (config.json implies shape "
                                                  f"{tuple(tensor.shape)})")
        if given[key].shape != tensor.shape:
            raise ConfigError(path, prefix + key, f"shape {tuple(given[key].shape)} in the checkpoint, config.json "
                                                  f"implies {tuple(tensor.shape)}")
    for key in given:
        if key not in expected:
            raise ConfigError(path, prefix + key, "in the checkpoint but not a parameter of the network config.json "
                                                  "describes")
    module.load_state_dict({k: v.to(torch.float32) for k, v in given.items()})
