"""`vla-ros bench ik` at CI size: the JSON has the issue's shape and the peers solve the same problem."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import vla_ros.bench.ik as bench
from vla_ros.core.robot import load_robot


def run_bench(tmp_path, *extra: str) -> dict:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "ik.json"
    assert bench.main(parser.parse_args(["--json", str(out), *extra])) == 0
    return json.loads(out.read_text())


def test_bench_json_has_the_issue_shape(tmp_path, capsys):
    results = run_bench(tmp_path, "--robots", "franka", "aloha", "--n", "16", "--peer-n", "2", "--step-n", "20")
    assert set(results) == {"franka", "aloha"}
    for entry in results.values():
        assert entry["n"] == 16 and 0.0 <= entry["success_rate"] <= 1.0
        assert 0.0 < entry["median_ms"] <= entry["p99_ms"]
        assert set(entry["peers"]) == {"ikpy", "pink"}
        for peer in entry["peers"].values():
            assert peer["n"] == 2 and {"success_rate", "median_ms", "speedup"} <= set(peer)
        assert entry["settings"]["peer_n"] == 2
        assert entry["step"]["n"] == 20 and 0.0 < entry["step"]["median_us"] <= entry["step"]["p99_us"]
    assert set(results["aloha"]["arms"]) == {"left", "right"}  # both arms, reported together and apart
    assert results["franka"]["success_rate"] == 1.0
    assert "ikpy ok" in capsys.readouterr().out


def test_samples_are_reproducible_and_reachable():
    robot = load_robot("widowx")
    first, second = bench.Samples(robot, 5, seed=3), bench.Samples(robot, 5, seed=3)
    np.testing.assert_array_equal(first.starts, second.starts)
    assert all(a.isApprox(b) for a, b in zip(first.targets, second.targets))
    assert np.all((first.starts >= robot.limits.lower) & (first.starts <= robot.limits.upper))


@pytest.mark.parametrize("name", ["franka", "ur5", "widowx", "aloha"])
def test_ikpy_chain_matches_pinocchio(name):
    robot = load_robot(name)
    samples = bench.Samples(robot, 1, seed=0)
    bench.ikpy_solver(robot, samples)  # raises if the chain's FK disagrees with pinocchio's
