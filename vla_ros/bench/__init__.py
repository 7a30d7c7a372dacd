"""Benchmarks: `vla-ros bench <name> --json OUT` runs vla_ros.bench.<name>."""
