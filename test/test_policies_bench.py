"""`vla-ros bench policies`: the JSON contract (one row per remote backend, the peer comparisons) on a few calls."""

from __future__ import annotations

import json

from vla_ros.cli import main as cli_main


def test_bench_writes_a_row_per_remote_backend(tmp_path, capsys):
    out = tmp_path / "policies.json"
    remote = ["openpi_ws/openpi_pi0_aloha", "openvla_rest/openvla_bridge", "openvla_oft_rest/openvla_oft_aloha",
              "gr00t_zmq/gr00t_n15_aloha", "gr00t_zmq/gr00t_n15_aloha (torch)", "gr00t_zmq/gr00t_n16_widowx",
              "lerobot_async_grpc/lerobot_async_act_aloha"]
    assert cli_main(["bench", "policies", "--json", str(out), "--calls", "3", "--warmup", "1", "--rows", *remote]) == 0
    results = json.loads(out.read_text())
    assert results["machine"]["torch_threads"] == 1 and results["local"] == {}
    rows = results["remote"]
    assert [row["backend"] for row in rows] == ["openpi_ws", "openvla_rest", "openvla_oft_rest", "gr00t_zmq",
                                                "gr00t_zmq", "gr00t_zmq", "lerobot_async_grpc"]
    assert rows[4]["serialization"] == "torch"
    for row in rows:
        assert row["calls"] == 3 and 0 < row["p50_ms"] <= row["p99_ms"]
    assert rows[0]["transport_ratio_vs_peer_p50"] > 0 and "WebsocketClientPolicy" in rows[0]["peer"]["client"]
    assert rows[-1]["decode_ratio_vs_peer_p50"] > 0
    assert "lerobot_async_act_aloha" in capsys.readouterr().out


def test_bad_call_count_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["bench", "policies", "--json", str(tmp_path / "x.json"), "--calls", "0"]) == 2
    assert "--calls" in capsys.readouterr().err
