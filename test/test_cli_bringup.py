"""`vla-ros bringup --sim`: the one-process control graph driving a simulated robot that runs as its own process;
the sim stops with the graph and leaves no process behind."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bringup_with_sim_process(tmp_path, ros_domain_id):
    summary_path = tmp_path / "summary.json"
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    exe = Path(sys.executable).with_name("vla-ros")
    done = subprocess.run([str(exe), "bringup", "--robot", "ur5", "--sim", "--duration", "6",
                           "--summary", str(summary_path)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    sim = summary["sim_node"]
    assert sim["exit_code"] == 0
    assert not Path(f"/proc/{sim['pid']}").exists() or "zombie" in Path(f"/proc/{sim['pid']}/status").read_text()
    # the policy waited for the sim and started on its measured state; the arm was commanded while it ran
    assert "action contract holds from the measured state" in done.stderr + done.stdout
    safety = summary["safety_node"]
    assert safety["commands"] > 150 and safety["state"] == "ok"
    assert summary["policy_node"]["published"] > 150
