"""`vla-ros replay BAG --robot R --policy P --out DIR`: evaluate a policy offline on a rosbag2 recording.

The bag's camera, joint-state and instruction messages drive the same chain that runs on the robot (executor -> IK
-> safety) in bag time, deterministically, as fast as the machine allows; what the chain commands is compared with
the controller commands the bag recorded. Writes DIR/metrics.json, PNG plots and DIR/report.md.

  --sweep   several executor settings over the same bag and injected latency, one comparison table
  --live    republish the bag (original types + /clock) into a running ROS graph instead
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from vla_ros.core.errors import VlaRosError
from vla_ros.progress import Progress

# Defaults of the executor flags are None so only what the user gave overrides ExecutorConfig's own defaults.
_EXECUTOR_FLAGS = {  # flag dest -> ExecutorConfig field
    "executor": "mode", "execute_steps": "execute_steps", "threshold": "queue_threshold", "blend": "blend",
    "blend_steps": "blend_steps", "ensemble_coeff": "ensemble_coeff", "max_chunk_age": "max_chunk_age",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap), or a single .db3 / .mcap file")
    add_chain_arguments(parser, required=False)
    live = parser.add_argument_group("live")
    live.add_argument("--live", action="store_true", help="republish the bag into a running graph with /clock")
    live.add_argument("--rate", type=float, default=1.0, help="--live playback speed factor (default 1)")


def add_chain_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """What `vla-ros replay` and `vla-ros evaluate` share: robot, policy, output, timing, executor, inputs, sweep."""
    need = " (not needed with --live)" if not required else ""
    parser.add_argument("--robot", required=required, help=f"built-in robot name or path to a robot YAML{need}")
    parser.add_argument("--urdf", help="use this URDF instead of the one the robot YAML names")
    parser.add_argument("--policy", required=required, help=f"built-in policy name or path to a policy YAML{need}")
    parser.add_argument("--out", required=required, help="output directory for metrics.json, plots and report.md")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="read bag topic FROM as TO (repeatable)")
    timing = parser.add_argument_group("injected policy latency")
    timing.add_argument("--latency", type=float, default=0.0, metavar="MS", help="inference latency (default 0)")
    timing.add_argument("--jitter", type=float, default=0.0, metavar="MS",
                        help="uniform jitter half-width around --latency")
    timing.add_argument("--seed", type=int, default=0, help="jitter seed (runs are reproducible)")
    timing.add_argument("--measured-latency", action="store_true",
                        help="use each inference's real duration as its latency (realistic, not reproducible)")
    executor = parser.add_argument_group("executor (defaults: vla_ros.core.executor.ExecutorConfig)")
    executor.add_argument("--executor", choices=("sync", "ensemble", "async"), help="execution mode")
    executor.add_argument("--execute-steps", type=int, help="sync: chunk steps executed before re-inferring")
    executor.add_argument("--threshold", type=float, help="async: request below this fraction of the horizon")
    executor.add_argument("--blend", choices=("crossfade", "prefix"), help="async hand-over")
    executor.add_argument("--blend-steps", type=int, help="async crossfade length in chunk steps")
    executor.add_argument("--ensemble-coeff", type=float, help="ensemble: weight exp(-coeff * i)")
    executor.add_argument("--max-chunk-age", type=float, metavar="S", help="reject chunks older than this")
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--instruction", help="task text when the bag has no instruction topic")
    inputs.add_argument("--instruction-topic", default="/vla_ros/instruction",
                        help="std_msgs/String topic (default %(default)s, the policy node's)")
    inputs.add_argument("--actions-topic", metavar="TOPIC",
                        help="recorded actions (std_msgs/Float64MultiArray, one action of the policy's action space "
                             "per message): compared with the chain's actions, and played back by a playback policy")
    inputs.add_argument("--safety", metavar="YAML", help="safety config (default: config/safety.yaml)")
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--sweep", action="store_true", help="run a grid of executor settings")
    sweep.add_argument("--sweep-modes", default="sync,ensemble,async", help="comma-separated (default %(default)s)")
    sweep.add_argument("--sweep-thresholds", default="0.3,0.5,0.8", help="async thresholds (default %(default)s)")
    sweep.add_argument("--sweep-blend-steps", default="0,5,10", help="async crossfade lengths (default %(default)s)")


def tune_allocator() -> None:
    """Keep large freed blocks on glibc's heap for the rest of this process.

    Bag payloads are large (a 640x480 rgb8 frame is 0.9 MB, mcap chunks are read whole). By default glibc serves each
    such allocation with a fresh mmap and unmaps it on free, so every read page-faults its buffer anew: reading a
    camera bag measured 4-5x slower that way. This is what MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set from
    the environment; doing it here spares users the incantation. A no-op without glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 64 << 20)
    libc.mallopt(m_trim_threshold, 256 << 20)


def _numbers(text: str, kind, flag: str) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise VlaRosError(f"{flag}: expected comma-separated {kind.__name__} values, got {text!r}") from None
    if not values:
        raise VlaRosError(f"{flag}: expected at least one value")
    return values


def executor_config(args, robot, policy_defaults=None):
    """Command-line flags over the executor settings the policy prescribes (policy_defaults) over the core's."""
    from vla_ros.core.executor import ExecutorConfig

    values = dict(policy_defaults or {})
    values.update({field: getattr(args, dest) for dest, field in _EXECUTOR_FLAGS.items()
                   if getattr(args, dest) is not None})
    return ExecutorConfig(control_dt=1.0 / robot.control_rate_hz, **values)


def sweep_settings(args, robot, policy_defaults=None) -> list:
    """--sweep's grid of executor settings around the flags' (and the policy's) own."""
    from vla_ros.core.replay.sweep import sweep_configs

    modes = [m.strip() for m in args.sweep_modes.split(",") if m.strip()]
    return sweep_configs(executor_config(args, robot, policy_defaults), modes,
                         _numbers(args.sweep_thresholds, float, "--sweep-thresholds"),
                         _numbers(args.sweep_blend_steps, int, "--sweep-blend-steps"))


def replay_options(args):
    from vla_ros.core.replay.run import ReplayOptions

    return ReplayOptions(latency=args.latency * 1e-3, jitter=args.jitter * 1e-3, seed=args.seed,
                         measured_latency=args.measured_latency, instruction=args.instruction,
                         instruction_topic=args.instruction_topic, actions_topic=args.actions_topic)


def run_info(args) -> dict:
    """The timing settings as the user gave them, for metrics["run"]."""
    return {"latency_ms": args.latency, "jitter_ms": args.jitter, "seed": args.seed,
            "measured_latency": args.measured_latency}


def main(args: argparse.Namespace) -> int:
    from vla_ros.core.replay.bag import Bag, parse_remaps
    from vla_ros.core.replay.job import PolicySource, load_safety_config
    from vla_ros.core.robot import load_robot

    remaps = parse_remaps(args.remap)
    tune_allocator()
    if args.live:
        from vla_ros.ros.replay_live import republish

        if not (math.isfinite(args.rate) and args.rate > 0):
            raise VlaRosError(f"--rate: expected a positive speed factor, got {args.rate}")
        return republish(Path(args.bag), remaps, rate=args.rate)
    if not (args.robot and args.policy and args.out):
        raise VlaRosError("--robot, --policy and --out are required (except with --live)")
    robot = load_robot(args.robot, urdf=Path(args.urdf) if args.urdf else None)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise VlaRosError(f"--out {out}: exists and is not a directory")
    options = replay_options(args)
    safety = load_safety_config(args.safety, robot)
    if args.sweep:  # flag errors before the bag's and the policy's
        sweep_settings(args, robot)
    with Bag(args.bag, remaps):  # the bag's errors before the policy's, as the command line reads
        pass
    policies = PolicySource(args.policy, robot, args.actions_topic)
    defaults = policies.executor_defaults
    configs = sweep_settings(args, robot, defaults) if args.sweep else [executor_config(args, robot, defaults)]
    if args.sweep:
        return _sweep(args, robot, remaps, policies, configs, options, safety, out)
    return _replay(args, robot, remaps, policies, configs[0], options, safety, out)


def _replay(args, robot, remaps, policies, config, options, safety, out: Path) -> int:
    from vla_ros.core.replay.job import replay_to_directory

    progress = Progress(f"replay {Path(args.bag).name}")
    try:
        metrics = replay_to_directory(args.bag, robot, policies, config, options, safety, out, remaps=remaps,
                                      run_info=run_info(args), progress=progress.to)
    finally:
        progress.close()
    _print_summary(metrics, out, out / "report.md")
    return 0


def _print_summary(metrics: dict, out: Path, report: Path) -> None:
    comparison = metrics["comparison"]
    if comparison["available"]:
        worst = max(metrics["joint_rmse"].items(), key=lambda item: item[1])
        print(f"joint RMSE vs recording: worst {worst[0]} {worst[1]:.4g}; max error "
              f"{max(metrics['joint_max_error'].values()):.4g}")
    else:
        print(f"no comparison: {comparison['reason']}")
    executor = metrics["executor"]
    print(f"interventions {metrics['interventions_total']}, underflows {executor['underflows']}, "
          f"chunks {executor['accepted_chunks']} accepted / {executor['repeated_chunks']} repeated / "
          f"{sum(executor['rejected_chunks'].values())} rejected, "
          f"skipped {sum(metrics['skipped'].values())}")
    print(f"wrote {out / 'metrics.json'}, {report} and plots")


def _sweep(args, robot, remaps, policies, configs, options, safety, out: Path) -> int:
    from vla_ros.core.replay.bag import Bag
    from vla_ros.core.replay.sweep import run_sweep, write_sweep

    with Bag(args.bag, remaps) as bag:
        policy, _ = policies.for_bag(bag)
    progress = Progress("sweep", total=len(configs))
    try:
        rows = run_sweep(Path(args.bag), remaps, robot, policy, configs, options, safety_config=safety,
                         progress=lambda i, setting: progress.to(i))
        progress.to(len(configs))
    finally:
        progress.close()
    header = (f"Bag `{Path(args.bag).resolve()}`, robot `{robot.name}`, policy `{policy.metadata.name}`, injected "
              f"latency {args.latency:g} ms ± {args.jitter:g} ms (seed {args.seed}).")
    out.mkdir(parents=True, exist_ok=True)
    paths = write_sweep(rows, out, header)
    print(paths["markdown"].read_text())
    return 0
