"""Find the package's installed data (config/, urdf/, launch/) in every way vla_ros can be installed.

Order: a colcon install (ament index, when AMENT_PREFIX_PATH is set), a source checkout / editable install
(the directory above this package), then a pip-only install (setup.py data_files under <prefix>/share/vla_ros).
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "vla_ros"


def _ament_share() -> Path | None:
    if not os.environ.get("AMENT_PREFIX_PATH"):
        return None
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def share_dir() -> Path:
    """The directory holding config/, urdf/ and launch/ for this installation."""
    candidates = [_ament_share(), Path(__file__).resolve().parent.parent, Path(sys.prefix) / "share" / PACKAGE]
    for candidate in candidates:
        if candidate is not None and (candidate / "config" / "robots").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{PACKAGE}: cannot find config/robots in the ament index, the source tree or {sys.prefix}/share/{PACKAGE}"
    )


def robot_config_dir() -> Path:
    return share_dir() / "config" / "robots"


def policy_config_dir() -> Path:
    return share_dir() / "config" / "policies"


def builtin_names(directory: Path) -> list[str]:
    """The built-in configs of a kind: the YAML stems in its config directory."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def resolve_config(name_or_path: str | Path, directory: Path, kind: str) -> Path:
    """A built-in name (`directory`/<name>.yaml) or a path to a YAML -> the YAML path; ConfigError if neither."""
    from vla_ros.core.errors import ConfigError

    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists() or "/" in str(name_or_path):
        return candidate
    path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(name_or_path, "", f"unknown {kind}; expected a built-in "
                                            f"({', '.join(builtin_names(directory))}) or a YAML path")
    return path
