"""`vla-ros bench executor`: the JSON contract and the headline comparison on a short simulated run."""

from __future__ import annotations

import json

from vla_ros.cli import main as cli_main


def test_bench_writes_every_mode_and_latency(tmp_path, capsys):
    out = tmp_path / "executor.json"
    assert cli_main(["bench", "executor", "--json", str(out), "--latencies", "0,300", "--duration", "6"]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"sync", "ensemble", "async"}
    for by_latency in results.values():
        assert set(by_latency) == {"0", "300"}
        for metrics in by_latency.values():
            assert {"missed_ticks", "max_gap_periods", "boundary_jerk_ratio"} <= set(metrics)
    sync, ensemble, run_async = results["sync"]["300"], results["ensemble"]["300"], results["async"]["300"]
    assert sync["missed_ticks"] > 100 and sync["max_gap_periods"] >= 15  # the robot waits ~300 ms per chunk
    assert ensemble["requests_while_busy"] > ensemble["inferences"]  # one server cannot answer every tick
    assert run_async["missed_ticks"] == 0 and run_async["max_gap_periods"] == 1.0
    assert run_async["boundary_jerk_ratio"] < sync["boundary_jerk_ratio"]
    table = capsys.readouterr().out
    assert "async" in table and "300 ms" in table


def test_bench_is_deterministic(tmp_path):
    runs = []
    for name in ("a.json", "b.json"):
        out = tmp_path / name
        cli_main(["bench", "executor", "--json", str(out), "--latencies", "100", "--duration", "3"])
        runs.append(json.loads(out.read_text()))
    assert runs[0] == runs[1]


def test_bad_latency_list_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["bench", "executor", "--json", str(tmp_path / "x.json"), "--latencies", "fast"]) == 2
    assert "--latencies" in capsys.readouterr().err
