"""`vla-ros bench NAME --json OUT [...]`: NAME maps to module vla_ros.bench.<name> ('-' -> '_')."""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import vla_ros.bench


def available() -> list[str]:
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(vla_ros.bench.__path__))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=available(), help="which benchmark")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (--json OUT, ...)")


def main(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"vla_ros.bench.{args.name.replace('-', '_')}")
    parser = argparse.ArgumentParser(prog=f"vla-ros bench {args.name}", description=(module.__doc__ or "").strip())
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(args.rest)) or 0)
