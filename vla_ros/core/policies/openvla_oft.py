"""Client for OpenVLA-OFT's deploy server (moojink/openvla-oft@213c5ff8d6 vla-scripts/deploy.py).

The transport is OpenVLA's (POST /act, json_numpy bodies, the JSON string "error" when the server failed, optional
double encoding): `openvla_rest.JsonNumpyEndpoint`. The request and reply differ:

    request  {"full_image": uint8 (H, W, 3), <keys containing "wrist">: uint8 (H, W, 3), "state": proprio,
              "instruction": str}
    reply    a list of NUM_ACTIONS_CHUNK actions of ACTION_DIM values, un-normalised by the server with the
             --unnorm_key it was started with (the request names none)

The server takes "full_image" as the primary view and then every key containing "wrist", in the request's key
order (experiments/robot/openvla_utils.py get_vla_action); keys without "wrist" are ignored, so the config refuses
them. It normalises "state" with the checkpoint's proprio statistics and center-crops when started with
--center_crop. Chunk length and widths are fixed per platform (prismatic/vla/constants.py): LIBERO 8 x 7 (proprio
8), ALOHA 25 x 14 (proprio 14), Bridge 5 x 7 (proprio 7).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vla_ros.core.config import Section
from vla_ros.core.policies.openvla_rest import JsonNumpyEndpoint, check_http_url, numeric_array, read_double_encode
from vla_ros.core.policies.preprocess import RESIZE_MODES, StateColumn, camera_image, check_cameras, \
    parse_image_size, parse_state, resize_image, state_vector
from vla_ros.core.policies.spec import ActionTransform, checked_chunk, parse_action_space, parse_action_transform, \
    positive_int
from vla_ros.core.types import ActionChunk, ActionSpace, Observation, PolicyMetadata

PRIMARY_IMAGE_KEY = "full_image"
EXPECTS = "{'full_image': uint8 (H, W, 3), '*wrist*': uint8 (H, W, 3), 'state': proprio, 'instruction': str}"


class OpenVLAOFTPolicy:
    """A chunk of `horizon` actions per call from an OpenVLA-OFT deploy server."""

    # what the action-contract self-test (core.contract) cannot exercise
    contract_notes = ("not checked: the server's model and its un-normalisation with the statistics of its "
                      "--unnorm_key (the identity answers from the request's state in the reply format)",)

    def __init__(self, url: str, *, name: str, images: Sequence[tuple[str, str]], state: Sequence[StateColumn] | None,
                 action_space: ActionSpace, horizon: int, rate_hz: float, image_size: tuple[int, int] = (224, 224),
                 resize: str = "stretch", transform: ActionTransform = ActionTransform(), timeout_s: float = 10.0,
                 double_encode: bool = False):
        check_http_url(url, f"policy {name}")
        self.images, self.state, self.resize, self.transform = tuple(images), state, resize, transform
        self.endpoint = JsonNumpyEndpoint(url, server="OpenVLA-OFT", expects=EXPECTS, timeout_s=timeout_s,
                                          double_encode=double_encode)
        self.metadata = PolicyMetadata(name=name, action_space=action_space, horizon=horizon, rate_hz=rate_hz,
                                       cameras=tuple(camera for _, camera in self.images), image_size=image_size)

    def encode(self, observation: Observation) -> dict:
        """The request body as it is sent."""
        meta = self.metadata
        # Key order is part of the protocol: the server appends the wrist views in the order it reads them.
        payload: dict = {key: resize_image(camera_image(observation, camera, meta.name), meta.image_size, self.resize)
                         for key, camera in self.images}
        if self.state is not None:
            payload["state"] = state_vector(self.state, observation, meta.name)
        payload["instruction"] = observation.instruction
        return payload

    def decode(self, reply, observation: Observation) -> ActionChunk:
        actions = numeric_array(reply, self.metadata.name, "OpenVLA-OFT")
        return checked_chunk(self.metadata, actions, observation.stamp, transform=self.transform)

    def infer(self, observation: Observation) -> ActionChunk:
        return self.decode(self.endpoint.act(self.encode(observation)), observation)

    def identity_chunk(self, observation: Observation, identity) -> ActionChunk:
        """The action-contract self-test (core.contract): the request as sent, answered by `identity` as a reply."""
        payload = self.encode(observation)
        states = {"state": (self.state, payload["state"])} if self.state is not None else {}
        row = identity.actions(states, observation)
        return self.decode(np.tile(row, (self.metadata.horizon, 1)).tolist(), observation)


def from_config(cfg: Section, robot=None) -> OpenVLAOFTPolicy:
    """YAML keys: name, url, horizon (the platform's NUM_ACTIONS_CHUNK), rate_hz, images (request key -> robot
    camera: full_image first, then keys containing "wrist"), state (proprio parts, see preprocess.parse_state; omit
    for a checkpoint trained without proprio), image_size, resize, actions (clip / binarize / scale, as the peer's
    eval client post-processes), action_space, timeout_s, double_encode."""
    cfg.unknown_keys({"backend", "name", "url", "horizon", "rate_hz", "images", "state", "image_size", "resize",
                      "actions", "action_space", "timeout_s", "double_encode"})
    url = cfg.str("url")
    check_http_url(url, cfg.source)
    images_section = cfg.section("images")
    images = [(key, images_section.str(key)) for key in images_section.data]
    if not images or images[0][0] != PRIMARY_IMAGE_KEY:
        raise cfg.error("images", f"the first key must be {PRIMARY_IMAGE_KEY!r} (the server's primary view), got "
                                  f"{[key for key, _ in images]}")
    for key, _ in images[1:]:
        if "wrist" not in key:
            raise images_section.error(key, "deploy.py reads only 'full_image' and keys containing 'wrist'; this "
                                            "image would be ignored")
    for key, camera in images:
        check_cameras([camera], robot, cfg.source, f"images.{key}")
    action_space = parse_action_space(cfg.section("action_space"), robot)
    return OpenVLAOFTPolicy(
        url, name=cfg.str("name"), images=images,
        state=parse_state(cfg.sections("state"), robot) if cfg.has("state") else None, action_space=action_space,
        horizon=positive_int(cfg, "horizon"), rate_hz=cfg.float("rate_hz", positive=True),
        image_size=parse_image_size(cfg, default=(224, 224)), resize=cfg.choice("resize", RESIZE_MODES, "stretch"),
        transform=parse_action_transform(cfg.section("actions", {}), action_space.dim),
        timeout_s=cfg.float("timeout_s", 10.0, positive=True), double_encode=read_double_encode(cfg),
    )
