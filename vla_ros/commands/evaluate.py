"""`vla-ros evaluate BAG_OR_DIR... --robot R --policy P --out DIR [--sweep ...] [--address ADDR]`: replay many bags
(x executor settings) on Ray and write one aggregated report.

Every (bag x setting) is one Ray task running the same single-bag replay as `vla-ros replay`
(`core.replay.job.replay_to_directory`); its output lands in DIR/runs/<bag>/<setting>/ as soon as it finishes, so an
interrupted evaluation resumes where it stopped (`--no-resume` redoes everything). A bag that cannot be replayed
(corrupt, missing topics) fails its own tasks only; the failures are listed in the report and the exit code is 1.
DIR/report.md, DIR/summary.json and DIR/plots/ aggregate every task.

Ray: by default an embedded local instance sized to this machine's cores (`--workers` to change), bound to loopback
(127.0.0.1) with usage stats and the dashboard off; `--address` joins an existing cluster instead (bags and configs
must then be readable at the same absolute paths on every node, and vla_ros installed there).
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

from vla_ros.commands.replay import (add_chain_arguments, executor_config, replay_options, run_info,
                                     sweep_settings, tune_allocator)
from vla_ros.core.errors import VlaRosError, one_line
from vla_ros.progress import Progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG_OR_DIR",
                        help="rosbag2 bags (directories, .db3 or .mcap files) or directories searched for bags")
    add_chain_arguments(parser, required=True)
    cluster = parser.add_argument_group("Ray")
    cluster.add_argument("--address", help="join this running Ray cluster (as ray.init(address=...)); default: a "
                                           "local Ray on this machine, loopback only")
    cluster.add_argument("--workers", type=int, help="local Ray: tasks run in parallel (default: every core)")
    parser.add_argument("--plots", action="store_true",
                        help="also write each bag's PNG plots, as vla-ros replay does (off by default: plotting takes "
                             "several times longer than replaying a short bag)")
    parser.add_argument("--no-resume", action="store_true", help="redo the tasks an earlier run already finished")


# --- worker side ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _prepared(setup):
    """Robot, policy and safety config of an evaluation, loaded once per worker process (tasks reuse the process)."""
    from vla_ros.core.replay.job import PolicySource, load_safety_config
    from vla_ros.core.robot import load_robot

    tune_allocator()
    robot = load_robot(setup.robot, urdf=Path(setup.urdf) if setup.urdf else None)
    return robot, PolicySource(setup.policy, robot, setup.actions_topic), load_safety_config(setup.safety, robot)


def run_task(setup, task) -> dict:
    """One (bag x setting) replay; returns its outcome with the replay's files as bytes (the driver writes them, so
    workers need no access to the output directory). Never raises for a bad bag: the other tasks go on."""
    from vla_ros.core.replay.fleet import task_row
    from vla_ros.core.replay.job import replay_to_directory

    started = time.perf_counter()
    try:
        robot, policies, safety = _prepared(setup)
        with tempfile.TemporaryDirectory(prefix="vla_ros_task_") as tmp:
            metrics = replay_to_directory(task.bag, robot, policies, task.config, setup.options, safety, Path(tmp),
                                          remaps=dict(setup.remaps), run_info=dict(setup.run_info), plots=setup.plots)
            files = {path.name: path.read_bytes() for path in Path(tmp).iterdir()}
        return {"status": "ok", "row": task_row(metrics), "files": files, "seconds": time.perf_counter() - started}
    except VlaRosError as exc:
        return {"status": "failed", "error": str(exc), "seconds": time.perf_counter() - started}
    except Exception as exc:  # a bug or an input nobody anticipated: reported with its traceback, not fatal
        return {"status": "failed", "error": f"{one_line(exc)} (traceback.txt)",
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - started}


# --- driver side ----------------------------------------------------------------------------------------------------

@functools.cache
def _process_token() -> str:
    return secrets.token_hex(32)


@contextmanager
def ray_session(address: str | None = None, workers: int | None = None) -> Iterator[str]:
    """Ray for the tasks: an existing cluster at `address`, or a local instance with `workers` CPUs on loopback.
    Yields a one-line description; shuts the local instance down (or disconnects) on exit."""
    settings = {"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
    if address is None:
        # Read when ray is imported: makes Ray's node address 127.0.0.1 (single machine), so its GCS, raylet and
        # workers listen on loopback only instead of on every interface.
        settings["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if "RAY_AUTH_MODE" not in os.environ:
            # Ray's default token authentication, with a token of this process handed to Ray's processes through
            # the environment instead of one Ray would write to ~/.ray/auth_token (and announce on stderr). One
            # token per process: Ray keeps the first it reads, so a second local instance must get the same.
            settings.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=_process_token())
    constants = sys.modules.get("ray._private.ray_constants")
    if address is None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        raise VlaRosError("ray was imported before vla-ros could keep a local Ray on loopback; start evaluations "
                          "before importing ray in this process")
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    temp = None
    try:
        try:
            import ray
        except ImportError:
            raise VlaRosError("vla-ros evaluate needs Ray: pip install ray==2.60.0 (pinned in requirements.txt)") \
                from None
        try:
            if address is not None:
                ray.init(address=address, configure_logging=False, log_to_driver=False)
            else:
                temp = tempfile.mkdtemp(prefix="vla_ros_ray_")  # short: Ray's unix socket paths live under it
                ray.init(num_cpus=workers, include_dashboard=False, configure_logging=False, log_to_driver=False,
                         object_store_memory=256 << 20, _temp_dir=temp)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError...: all mean "no Ray to run on"
            where = f"cannot join the Ray cluster at --address {address}" if address else "cannot start a local Ray"
            raise VlaRosError(f"{where} ({one_line(exc)})") from None
        try:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
            if address is None and set(nodes) != {"127.0.0.1"}:
                raise VlaRosError(f"local Ray is not on loopback (node address {', '.join(nodes)}): ray was "
                                  "imported before vla-ros could configure it")
            yield (f"cluster at {address}, {len(nodes)} nodes, {cpus} CPUs" if address else
                   f"local, {cpus} CPUs, loopback only")
        finally:
            ray.shutdown()
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_on_ray(setup, tasks: Sequence, on_done: Callable[[object, dict], None], cpus_per_task: int = 1) -> None:
    """Submit every task (`cpus_per_task` CPUs each) to the connected Ray and call on_done(task, outcome) as each
    finishes."""
    import ray

    # max_retries 0: a replay is deterministic, a retry fails alike
    remote = ray.remote(num_cpus=cpus_per_task, max_retries=0)(run_task)
    setup_ref = ray.put(setup)
    pending = {remote.remote(setup_ref, task): task for task in tasks}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.2)
        for ref in done:
            task = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died (crash, out of memory) or the task was lost
                outcome = {"status": "failed", "error": f"Ray: {one_line(exc)}"}
            on_done(task, outcome)


def _setup(args):
    """Everything checked before Ray starts: one-line errors (exit 2) for bad flags, configs and bag paths."""
    from vla_ros.core.replay.bag import parse_remaps
    from vla_ros.core.replay.job import PolicySource, load_safety_config
    from vla_ros.core.replay.tasks import EvaluationSetup, find_bags
    from vla_ros.core.robot import load_robot
    from vla_ros.core.safety.config import default_safety_config_path

    if args.address is not None and args.workers is not None:
        raise VlaRosError("--workers sizes the local Ray; with --address the cluster's CPUs decide")
    if args.workers is not None and args.workers < 1:
        raise VlaRosError(f"--workers: expected at least 1, got {args.workers}")
    remaps = parse_remaps(args.remap)
    robot = load_robot(args.robot, urdf=Path(args.urdf) if args.urdf else None)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VlaRosError(f"--out {out}: exists and is not a directory")
    options = replay_options(args)
    load_safety_config(args.safety, robot)
    policies = PolicySource(args.policy, robot, args.actions_topic)
    defaults = policies.executor_defaults
    configs = sweep_settings(args, robot, defaults) if args.sweep else [executor_config(args, robot, defaults)]
    for config in configs:
        policies.check(config)
    bags = find_bags(args.bags)
    setup = EvaluationSetup(
        robot=str(robot.config_path), urdf=str(Path(args.urdf).resolve()) if args.urdf else None,
        policy=str(policies.path.resolve()), actions_topic=args.actions_topic,
        safety=str(Path(args.safety or default_safety_config_path()).resolve()), options=options,
        remaps=tuple(remaps.items()), run_info=tuple(run_info(args).items()), plots=args.plots)
    return setup, robot, policies, bags, configs, out


def main(args: argparse.Namespace) -> int:
    from vla_ros.core.replay.fleet import write_fleet_report
    from vla_ros.core.replay.tasks import finished, plan, settings_of, write_result

    setup, robot, policies, bags, configs, out = _setup(args)
    tasks = plan(setup, bags, configs)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for task in tasks:
        earlier = None if args.no_resume else finished(out, task)
        if earlier is not None:
            results[task] = earlier
    todo = [task for task in tasks if task not in results]
    started = time.perf_counter()
    description = "not started (every task finished by an earlier run)"
    if todo:
        progress = Progress("evaluate", total=len(todo), unit="tasks")

        def done(task, outcome):
            results[task] = write_result(out, task, outcome)
            progress.to(len(results) - (len(tasks) - len(todo)))

        try:
            with ray_session(args.address, args.workers) as description:
                run_on_ray(setup, todo, done)
        finally:
            progress.close()
    ordered = [results[task] for task in tasks]
    run = {"robot": robot.name, "policy": policies.name, "bags": len(bags), "ray": description,
           "wall_s": time.perf_counter() - started, **dict(setup.run_info)}
    paths = write_fleet_report(run, ordered, [s for s, _, _ in settings_of(configs)], out)
    failed = [r for r in ordered if r.status != "ok"]
    resumed = sum(r.resumed for r in ordered)
    print(f"evaluated {len(bags)} bags x {len(ordered) // max(len(bags), 1)} setting(s): "
          f"{len(ordered) - len(failed)} ok, {len(failed)} failed" + (f", {resumed} resumed" if resumed else ""))
    for result in failed[:10]:
        print(f"  failed: {result.bag_id} [{result.setting}]: {result.error}")
    print(f"wrote {paths['report']} and {paths['summary']}")
    return 1 if failed else 0
