"""`vla-ros bench soak`: a short soak with every fault kind; no exception, no limit violation, the JSON contract."""

from __future__ import annotations

import json

from vla_ros.cli import main as cli_main


def test_short_soak_with_faults_raises_nothing_and_breaks_no_limit(tmp_path, capsys):
    out = tmp_path / "soak.json"
    assert cli_main(["bench", "soak", "--json", str(out), "--steps", "1500", "--seed", "3"]) == 0
    result = json.loads(out.read_text())
    assert result["steps"] == 1500 and result["exceptions"] == 0 and result["violations"] == 0
    assert result["goals_met"]["no_exceptions"] and result["rss_end_mb"] > 0 and len(result["rss_samples"]) >= 10
    assert sum(result["faults"].values()) >= 5  # faults were injected
    assert result["interventions"]["input"] > 0  # and the garbage was refused, counted
    assert "0 exceptions" in capsys.readouterr().out
