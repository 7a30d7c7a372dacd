"""`vla-ros bench replay` runs end to end on a short bag and reports both throughput figures."""

import argparse
import json

import vla_ros.bench.replay as bench


def test_bench_replay_writes_both_figures(tmp_path):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "replay.json"
    assert bench.main(parser.parse_args(["--json", str(out), "--duration", "0.5", "--repeat", "1",
                                         "--storage", "sqlite3"])) == 0
    result = json.loads(out.read_text())
    assert result["x_realtime"] > 0 and result["raw_read_x_realtime"] > 0
    assert result["x_realtime_cpu"] > 0 and result["rosbags_reader_x_realtime"] > 0
    assert result["storage"] == "sqlite3" and result["camera"] == "640x480 rgb8 @ 30 Hz"
    run = result["by_storage"]["sqlite3"]
    assert run["inferences"] > 0 and run["ticks"] == 26  # 0.5 s at 50 Hz, both ends included
    assert run["chunks"]["accepted"] > 0 and run["chunks"]["rejected"] == {}
    assert set(run["holds"]) <= {"startup"}  # the chain ran: a bench of a holding chain would flatter it
    assert run["camera_frames"]["received"] == 16 and 0 < run["camera_frames"]["decoded"] <= 16
