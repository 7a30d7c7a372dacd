"""Policy backends behind one interface (`vla_ros.core.types.Policy`), built from a policy YAML by `make_policy`.

A policy YAML names its backend and that backend's fields:
    backend: colour_target_baseline | torch_local | openpi_ws | openvla_rest | openvla_oft_rest | gr00t_zmq |
             lerobot_async_grpc | playback | lerobot
Backends load lazily, so building the baseline never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping

from vla_ros.core.config import Section, load_yaml
from vla_ros.core.policies.errors import ObservationError, PlaybackExhaustedError, PolicyServerError, \
    PolicyUnavailableError
from vla_ros.core.types import Policy

# backend name -> module (under vla_ros.core.policies) whose `from_config(section, robot)` builds it
BACKENDS = {
    "colour_target_baseline": "baseline",
    "torch_local": "torch_local",
    "openpi_ws": "openpi_ws",
    "openvla_rest": "openvla_rest",
    "openvla_oft_rest": "openvla_oft",
    "gr00t_zmq": "gr00t_zmq",
    "lerobot_async_grpc": "lerobot_async",
    "playback": "playback",
    "lerobot": "lerobot",  # LeRobot 0.4 pretrained_model/ directories (ACT, Diffusion), run natively
}

__all__ = [
    "BACKENDS", "ObservationError", "PlaybackExhaustedError", "PolicyServerError", "PolicyUnavailableError",
    "builtin_policy_names", "make_policy", "resolve_policy_config",
]


def builtin_policy_names() -> list[str]:
    from vla_ros.resources import builtin_names, policy_config_dir

    return builtin_names(policy_config_dir())


def resolve_policy_config(policy: str | Path) -> Path:
    """A built-in policy name (config/policies/<name>.yaml) or a path to a YAML -> the YAML path."""
    from vla_ros.resources import policy_config_dir, resolve_config

    return resolve_config(policy, policy_config_dir(), "policy")


def make_policy(config: Mapping | str | Path, robot=None, *, source: str | Path = "<policy config>") -> Policy:
    """Build a policy from a YAML path, a built-in name, or an already-loaded mapping.

    `robot` (a RobotModel) resolves arm / camera / joint names and is required by the baseline. For a mapping,
    relative file paths in it are resolved against the directory of `source`.
    """
    if isinstance(config, Mapping):
        section = Section(config, source)
    else:
        path = resolve_policy_config(config)
        section = Section(load_yaml(path), path)
    backend = section.choice("backend", tuple(BACKENDS))
    module = importlib.import_module(f"{__name__}.{BACKENDS[backend]}")
    return module.from_config(section, robot)
