"""`vla-ros` command line: one entry point for everything the launch files start, plus checks and benchmarks.

Subcommands live in their own modules and are imported only when used, so `vla-ros check-robot` never pays for
torch or rclpy. A user error (VlaRosError) prints one line and exits 2; never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vla_ros.core.errors import VlaRosError

# subcommand -> (module, help). Each module has add_arguments(parser) and main(args) -> int.
SUBCOMMANDS = {
    "check-robot": ("vla_ros.commands.check_robot", "validate a robot config + URDF and print its tables"),
    "check-policy": ("vla_ros.commands.check_policy",
                     "action-contract self-test: does a policy that holds still keep the robot still?"),
    "demo": ("vla_ros.commands.demo", "run the embedded demo (no hardware needed)"),
    "bringup": ("vla_ros.commands.bringup", "start the whole node graph in one process (pip-only path)"),
    "replay": ("vla_ros.commands.replay", "evaluate a policy offline on a rosbag (metrics, plots, report; --sweep, --live)"),
    "evaluate": ("vla_ros.commands.evaluate", "replay many bags (x executor settings) on Ray, one aggregated report"),
    "bench": ("vla_ros.commands.bench", "run a benchmark and write its JSON"),
}


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 with a usage block; keep it to one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def _top_level_help() -> str:
    lines = ["usage: vla-ros COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<14}{help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += ["", "`vla-ros COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0 if argv else 2
    command = argv[0]
    if command not in SUBCOMMANDS:
        print(f"vla-ros: error: unknown command {command!r}; expected one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_text = SUBCOMMANDS[command]
    module = importlib.import_module(module_name)
    parser = _ArgumentParser(prog=f"vla-ros {command}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except VlaRosError as exc:
        print(f"vla-ros {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
