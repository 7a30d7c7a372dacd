"""The tasks of a fleet evaluation: which bags, which executor settings, where each result goes, what is done.

Every (bag x executor setting) is one task, written to OUT/runs/<bag id>/<setting id>/: the bag's own replay output
(metrics.json, report.md, plots) and result.json, written last and atomically, so a task is finished exactly when its
result.json is there. result.json carries a fingerprint of everything the result depends on (the bag files' sizes and
times, the robot / URDF / policy / safety files' contents, the replay options and the executor setting); a rerun
skips the tasks whose successful result has the fingerprint it would compute again, and redoes the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from vla_ros.core.executor import ExecutorConfig
from vla_ros.core.replay.bag import STORAGE_BY_SUFFIX, BagError
from vla_ros.core.replay.fleet import TaskResult
from vla_ros.core.replay.run import ReplayOptions
from vla_ros.core.replay.sweep import describe

RESULT = "result.json"


@dataclass(frozen=True)
class EvaluationSetup:
    """What every task of one evaluation shares; absolute paths, so any worker of the cluster can load them."""

    robot: str  # robot YAML
    urdf: str | None  # URDF replacing the one the YAML names
    policy: str  # policy YAML
    actions_topic: str | None
    safety: str  # safety YAML
    options: ReplayOptions
    remaps: tuple[tuple[str, str], ...]
    run_info: tuple[tuple[str, object], ...]  # settings as the user gave them, for metrics["run"]
    plots: bool = False  # each bag's PNG plots


@dataclass(frozen=True)
class EvaluationTask:
    bag: str  # absolute path
    bag_id: str
    setting: str  # sweep.describe of the config
    setting_id: str
    config: ExecutorConfig
    fingerprint: str

    @property
    def directory(self) -> str:
        """Relative to the evaluation's output directory."""
        return f"runs/{self.bag_id}/{self.setting_id}"


def _is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or \
        (path.is_file() and path.suffix in STORAGE_BY_SUFFIX)


def find_bags(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(bag path, id) for every bag given: a rosbag2 directory or .db3 / .mcap file itself, or every bag under a
    directory (searched recursively; a bag directory's own files are not bags of their own). Ids are the bag's path
    relative to the directory it was found under (its name when given itself), made file-name safe and unique."""
    found: list[tuple[Path, str]] = []
    for given in map(Path, paths):
        if not given.exists():
            raise BagError(f"bag {given}: no such file or directory")
        given = given.resolve()
        if _is_bag(given):
            found.append((given, given.name))
            continue
        if not given.is_dir():
            raise BagError(f"bag {given}: not a rosbag2 directory, .db3 or .mcap file, nor a directory of bags")
        before = len(found)
        for root, dirs, files in os.walk(given):
            root_path = Path(root)
            dirs.sort()
            if _is_bag(root_path):
                dirs.clear()
                found.append((root_path, str(root_path.relative_to(given.parent))))
                continue
            found += [(root_path / f, str((root_path / f).relative_to(given.parent)))
                      for f in sorted(files) if Path(f).suffix in STORAGE_BY_SUFFIX]
        if len(found) == before:
            raise BagError(f"bag directory {given}: no rosbag2 bag in it (looked for directories with a metadata.yaml "
                           f"and .db3 / .mcap files)")
    unique, seen, ids = [], set(), {}
    for path, name in found:
        if path in seen:
            continue  # given twice (itself and under a directory): one task
        seen.add(path)
        unique.append((path, _unique(slug(name), ids)))
    return unique


def slug(text: str) -> str:
    """`text` as a file name: path separators become "__", anything else unusual "_"."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text.replace(os.sep, "__").replace(" ", "_")).strip("_") or "bag"


def _unique(name: str, taken: dict[str, int]) -> str:
    count = taken.get(name, 0)
    taken[name] = count + 1
    return name if count == 0 else f"{name}-{count + 1}"


def settings_of(configs: Iterable[ExecutorConfig]) -> list[tuple[str, str, ExecutorConfig]]:
    """(description, id, config) per distinct setting, in the given order."""
    out, seen = [], set()
    for config in configs:
        if config in seen:
            continue
        seen.add(config)
        description = describe(config)
        out.append((description, slug(description.replace(" ", "-").replace(":", "-")), config))
    return out


def _file_digest(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def _bag_state(bag: Path) -> list:
    files = sorted(bag.iterdir()) if bag.is_dir() else [bag]
    state = []
    for f in files:
        if f.is_file():
            stat = f.stat()
            state.append((f.name, stat.st_size, stat.st_mtime_ns))
    return state


def plan(setup: EvaluationSetup, bags: Sequence[tuple[Path, str]],
         configs: Iterable[ExecutorConfig]) -> list[EvaluationTask]:
    """Every (bag x setting) task, bags outermost, with its fingerprint."""
    shared = {
        **{k: v for k, v in dataclasses.asdict(setup).items() if k != "options"},
        "options": dataclasses.asdict(setup.options),
        "files": {name: _file_digest(getattr(setup, name)) for name in ("robot", "urdf", "policy", "safety")},
    }
    settings = settings_of(configs)
    tasks = []
    for path, bag_id in bags:
        state = _bag_state(path)
        for description, setting_id, config in settings:
            key = json.dumps({"setup": shared, "bag": str(path), "bag_files": state,
                              "config": dataclasses.asdict(config)}, sort_keys=True, default=str)
            tasks.append(EvaluationTask(str(path), bag_id, description, setting_id, config,
                                        hashlib.sha256(key.encode()).hexdigest()))
    return tasks


def finished(out: Path, task: EvaluationTask) -> TaskResult | None:
    """The earlier successful result of this very task (same fingerprint), if any."""
    try:
        data = json.loads((out / task.directory / RESULT).read_text())
    except (OSError, ValueError):
        return None
    if data.get("status") != "ok" or data.get("fingerprint") != task.fingerprint:
        return None
    return _result(task, data, resumed=True)


def _result(task: EvaluationTask, data: Mapping, resumed: bool = False) -> TaskResult:
    report = f"{task.directory}/report.md" if data["status"] == "ok" else None
    return TaskResult(task.bag, task.bag_id, task.setting, data["status"], data.get("error"), data.get("row"), report,
                      data.get("seconds"), resumed)


def write_result(out: Path, task: EvaluationTask, outcome: Mapping) -> TaskResult:
    """Write one task's outcome: its replay files (replacing any earlier ones), then result.json atomically.

    `outcome`: {"status": "ok" | "failed", "error", "row", "seconds", "files": {name: bytes}, "traceback"}."""
    directory = out / task.directory
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():
        if stale.is_file():
            stale.unlink()
    for name, data in (outcome.get("files") or {}).items():
        (directory / Path(name).name).write_bytes(data)
    if outcome.get("traceback"):
        (directory / "traceback.txt").write_text(outcome["traceback"])
    data = {"status": outcome["status"], "error": outcome.get("error"), "fingerprint": task.fingerprint,
            "bag": task.bag, "setting": task.setting, "executor": dataclasses.asdict(task.config),
            "seconds": outcome.get("seconds"), "row": outcome.get("row")}
    partial = directory / f".{RESULT}.partial"
    partial.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(partial, directory / RESULT)
    return _result(task, data)
