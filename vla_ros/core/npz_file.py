"""One .npz written whole or not at all: how a node run as its own process hands its results to the process that
started it (the demo's recording, a node's report), without pickle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Written to a temporary file beside `path` and renamed into place: a reader never sees half a file."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        np.savez(out, **arrays)
    os.replace(partial, path)
