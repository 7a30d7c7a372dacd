"""LeRobot async-inference payloads: the pickles its policy server reads and writes, without LeRobot installed.

LeRobot 0.4.x (src/lerobot/async_inference/helpers.py, robot_client.py, policy_server.py) pickles three dataclasses
of `lerobot.async_inference.helpers`:
  RemotePolicyConfig(policy_type, pretrained_name_or_path, lerobot_features, actions_per_chunk, device, rename_map)
  TimedObservation(timestamp, timestep, observation, must_go)     robot -> server
  TimedAction(timestamp, timestep, action: torch.Tensor)          server -> robot, as a list

Writing: `dump_lerobot_dataclass` emits the pickle a dataclass instance of that name produces (class by reference,
then its field dict), so the server's plain pickle.loads builds LeRobot's own classes. The stream is put together
from the standard opcodes because the pickler refuses to name a class it cannot import here; the field dict itself
is pickled by the standard pickler.

Reading: the server's reply is never given to plain pickle. `load_timed_actions` uses a restricted unpickler that
admits exactly the globals a chunk of CPU tensors (or numpy arrays) needs — TimedAction, torch's tensor rebuild
function, torch's storage loader (run as torch.load(weights_only=True), torch's own restricted unpickler), the
empty OrderedDict of backward hooks, numpy's array reconstruction — and refuses everything else, so a hostile or
compromised server cannot run code on the robot computer.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

HELPERS_MODULE = "lerobot.async_inference.helpers"


class ForbiddenPickleError(pickle.UnpicklingError):
    """The server's payload names a global outside the admitted set, or has the wrong structure."""


# --- writing --------------------------------------------------------------------------------------------------------


def _short_unicode(text: str) -> bytes:
    data = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data


def dump_lerobot_dataclass(class_name: str, fields: Mapping[str, Any]) -> bytes:
    """The protocol-4 pickle of `lerobot.async_inference.helpers.<class_name>(**fields)`: STACK_GLOBAL, NEWOBJ with
    no arguments, then BUILD with the field dict (what pickle.dumps writes for a plain dataclass instance)."""
    state = pickle.dumps(dict(fields), protocol=4)
    # Strip the state pickle's PROTO header, its leading FRAME (frames are optional and later ones stay valid) and
    # its STOP; its memo indices still hold because nothing before it is memoised.
    body = state[2:-1]
    if body[:1] == pickle.FRAME:
        body = body[9:]
    return (pickle.PROTO + bytes([4]) + _short_unicode(HELPERS_MODULE) + _short_unicode(class_name)
            + pickle.STACK_GLOBAL + pickle.EMPTY_TUPLE + pickle.NEWOBJ + body + pickle.BUILD + pickle.STOP)


# --- reading --------------------------------------------------------------------------------------------------------


@dataclass
class TimedAction:
    """What the server's TimedAction carries: `action` at `timestamp` (s), the `timestep`-th step."""

    timestamp: float
    timestep: int
    action: np.ndarray

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or set(state) != {"timestamp", "timestep", "action"}:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ForbiddenPickleError(f"TimedAction fields {keys}, expected action, timestamp, timestep")
        timestamp, timestep, action = state["timestamp"], state["timestep"], state["action"]
        if not isinstance(timestamp, (int, float)) or isinstance(timestep, bool) or not isinstance(timestep, int):
            raise ForbiddenPickleError(f"TimedAction timestamp {timestamp!r} / timestep {timestep!r} are not numbers")
        self.timestamp, self.timestep = float(timestamp), timestep
        self.action = np.asarray(action.numpy() if hasattr(action, "numpy") else action)


def _load_storage(data: bytes):
    """torch.storage._load_from_bytes, through torch's weights-only unpickler instead of a full torch.load."""
    import torch

    if not isinstance(data, bytes):
        raise ForbiddenPickleError(f"tensor storage is {type(data).__name__}, expected bytes")
    storage = torch.load(io.BytesIO(data), weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise ForbiddenPickleError(f"tensor storage decoded to {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """torch._utils._rebuild_tensor_v2 for a plain CPU tensor: the arguments are checked first (torch itself checks
    that size / stride / offset fit the storage)."""
    import torch
    from torch._utils import _rebuild_tensor_v2

    ints = lambda values: isinstance(values, tuple) and all(isinstance(v, int) for v in values)  # noqa: E731
    if (not isinstance(storage, torch.storage.TypedStorage) or not isinstance(storage_offset, int) or not ints(size)
            or not ints(stride) or not isinstance(requires_grad, bool) or backward_hooks or metadata):
        raise ForbiddenPickleError("tensor rebuild arguments are not those of a plain CPU tensor")
    return _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, collections.OrderedDict())


def _admitted() -> dict[tuple[str, str], Any]:
    reconstruct = np._core.multiarray._reconstruct
    return {
        (HELPERS_MODULE, "TimedAction"): TimedAction,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("collections", "OrderedDict"): collections.OrderedDict,
        # numpy arrays (a server sending numpy actions); numpy 1.x names the module numpy.core
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data))
        self._admitted = _admitted()
        self._admitted[("torch.storage", "_load_from_bytes")] = self._load_storage_once
        self._storages: dict[bytes, Any] = {}

    def _load_storage_once(self, data: bytes):
        # LeRobot pickles list(chunk): every row is a view of the chunk's storage, and each row carries its own
        # copy of the whole storage (a fresh storage object per row defeats the pickle memo). Load each distinct
        # blob once: 100 rows would otherwise cost 100 torch.load calls.
        if not isinstance(data, bytes) or data not in self._storages:
            self._storages[data] = _load_storage(data)
        return self._storages[data]

    def find_class(self, module: str, name: str) -> Any:
        found = self._admitted.get((module, name))
        if found is None:
            raise ForbiddenPickleError(f"refused global {module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenPickleError("refused a persistent id")


def load_timed_actions(data: bytes) -> list[TimedAction]:
    """The server's GetActions payload -> its TimedActions, refusing any other content (ForbiddenPickleError);
    malformed data raises what pickle raises (UnpicklingError, EOFError, ValueError, ...)."""
    actions = _RestrictedUnpickler(data).load()
    if not isinstance(actions, list) or not all(isinstance(a, TimedAction) for a in actions):
        what = type(actions).__name__ if not isinstance(actions, list) else "a list of other objects"
        raise ForbiddenPickleError(f"payload is {what}, expected a list of TimedAction")
    return actions

