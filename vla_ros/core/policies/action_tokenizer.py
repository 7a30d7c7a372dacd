"""RT-2 / OpenVLA-style action de-tokenisation and BOUNDS_Q99 un-normalisation.

Conventions follow openvla/openvla@c8f03f48af prismatic/vla/action_tokenizer.py and prismatic/models/vlas/openvla.py:
- 256 uniform bin *edges* over [-1, 1] (`linspace(-1, 1, 256)`), hence 255 bin centres;
- an action a is tokenised as `vocab_size - digitize(clip(a, -1, 1), edges)` (the last 256 ids of the vocabulary);
- a token id t decodes to `centres[clip(vocab_size - t - 1, 0, 254)]`;
- un-normalisation BOUNDS_Q99: a = 0.5 (n + 1)(q99 - q01) + q01 where `mask` is true, n passed through elsewhere
  (the gripper dimension).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from vla_ros.core.config import load_json
from vla_ros.core.errors import ConfigError


@dataclass(frozen=True)
class ActionDetokenizer:
    """Maps between normalised actions in [min_action, max_action] and the last `n_bins` token ids of a vocabulary.

    `vocab_size` is the *tokenizer's* vocabulary size (Llama-2 in OpenVLA: 32000), not the padded embedding size.
    """

    vocab_size: int
    n_bins: int = 256
    min_action: float = -1.0
    max_action: float = 1.0

    @cached_property
    def edges(self) -> np.ndarray:
        return np.linspace(self.min_action, self.max_action, self.n_bins)

    @cached_property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2.0

    def encode(self, normalized: np.ndarray) -> np.ndarray:
        """Normalised actions -> token ids (the training-time tokenisation)."""
        clipped = np.clip(np.asarray(normalized, dtype=np.float64), self.min_action, self.max_action)
        return self.vocab_size - np.digitize(clipped, self.edges)

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids -> normalised actions (bin centres). Ids outside the action range clip to the end bins."""
        bins = np.clip(self.vocab_size - np.asarray(token_ids, dtype=np.int64) - 1, 0, self.n_bins - 2)
        return self.centres[bins]


@dataclass(frozen=True)
class BoundsQ99:
    """Per-dimension 1st / 99th percentile action statistics; `mask` marks the dimensions that were normalised."""

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

    def __post_init__(self):
        if not (self.q01.shape == self.q99.shape == self.mask.shape and self.q01.ndim == 1):
            raise ValueError(f"q01 {self.q01.shape}, q99 {self.q99.shape} and mask {self.mask.shape} must be equal 1-D")

    @property
    def dim(self) -> int:
        return len(self.q01)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        normalized = np.asarray(normalized, dtype=np.float64)
        return np.where(self.mask, 0.5 * (normalized + 1.0) * (self.q99 - self.q01) + self.q01, normalized)

    def outside(self, action: np.ndarray, rel_tol: float = 1e-3) -> np.ndarray:
        """Masked dimensions of one action outside [q01, q99]: BOUNDS_Q99 output never is, so a hit means the
        server un-normalised with other statistics (a wrong `unnorm_key`)."""
        margin = rel_tol * (self.q99 - self.q01)
        return np.flatnonzero(self.mask & ((action < self.q01 - margin) | (action > self.q99 + margin)))

    def as_dict(self) -> dict[str, list]:
        return {"q01": self.q01.tolist(), "q99": self.q99.tolist(), "mask": self.mask.tolist()}


def load_bounds_q99(path: Path, key: str) -> BoundsQ99:
    """Action statistics `key` from an OpenVLA dataset_statistics.json ({key: {"action": {"q01", "q99", "mask"?}}})
    or a checkpoint config.json (the same under "norm_stats")."""
    data = load_json(path)
    if isinstance(data.get("norm_stats"), dict):
        data = data["norm_stats"]  # an OpenVLA checkpoint config.json
    entry = data.get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("action"), dict):
        keys = [k for k, v in data.items() if isinstance(v, dict) and "action" in v]
        raise ConfigError(path, key, f"no action statistics under this key (keys: {', '.join(keys) or 'none'})")
    action = entry["action"]
    try:
        q01 = np.asarray(action["q01"], dtype=np.float64)
        q99 = np.asarray(action["q99"], dtype=np.float64)
        mask = np.asarray(action.get("mask", [True] * len(q01)), dtype=bool)
        bounds = BoundsQ99(q01, q99, mask)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(path, f"{key}.action",
                          f"expected q01, q99 (and optional mask) lists of equal length: {exc}") from None
    if not np.all(np.isfinite(q01) & np.isfinite(q99)) or np.any(q99[mask] <= q01[mask]):
        raise ConfigError(path, f"{key}.action", "q01 / q99 must be finite with q99 > q01 on every masked dimension")
    return bounds
