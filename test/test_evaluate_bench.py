"""`vla-ros bench evaluate` runs end to end on two short bags and reports Ray's start-up apart from the throughput."""

import argparse
import json

import vla_ros.bench.evaluate as bench


def test_bench_evaluate_writes_rates_speedup_and_start_up(tmp_path):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "evaluate.json"
    assert bench.main(parser.parse_args(["--json", str(out), "--bags", "2", "--duration", "0.3",
                                         "--workers", "2", "--repeat", "1"])) == 0
    import ray  # after the bench: vla-ros configures Ray (loopback) before it is first imported

    assert not ray.is_initialized()
    result = json.loads(out.read_text())
    assert result["ray_start_s"] > 0 and result["warmup_s"] > 0 and "loopback only" in result["ray"]
    for phase in ("in_process", "one_worker", "n_workers"):
        assert result[phase]["tasks"] == 2 and result[phase]["tasks_per_s"] > 0 and result[phase]["task_s_mean"] > 0
    assert result["speedup"] == result["n_workers"]["tasks_per_s"] / result["one_worker"]["tasks_per_s"]
    assert result["efficiency"] == result["speedup"] / 2
