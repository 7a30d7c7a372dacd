"""A node run as its own process: `vla-ros bringup --sim`'s simulated robot; the demo's sim, recorder, ik_node and
safety_node.

On a robot the driver (ros2_control, the interbotix SDK) and a rosbag recorder are processes of their own, and so
should the simulated robot and the demo's recorder be. In the graph's process the sim's joint tracker, 100 Hz
joint_states and camera thread held more than a third of the GIL and the recorder another tenth (py-spy --gil,
`vla-ros demo`), so the control nodes' callbacks waited for them and targets arrived late enough to fire the safety
node's hold timer: 27-65 hold ticks in a quiet 20 s demo and 23-43 with every core busy (same day, before the
change). A child process has its own interpreter and competes only for CPU. With only those two out, the control
nodes still shared one GIL with the policy's worker, and 3 of 13 loaded demos held for 2-5 ticks; the demo now runs
ik_node and safety_node as their own processes too, as the launch file does.

The child is `python -m <node module> --ros-args ...` with this process's environment (the ROS wheels' .pth hook
needs it, as do ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE), stopped with SIGINT (ros/entry.py: a clean stop) and
killed by the kernel if this process dies first, so it never outlives its parent on the domain.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from vla_ros.core.errors import VlaRosError

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prepare_child(niceness: int | None) -> None:
    """In the child, before exec: SIGTERM when the parent exits (Linux; elsewhere not), and `niceness`."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if niceness is not None:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)


class NodeProcess:
    """`module` (e.g. vla_ros.ros.sim_node), whose node is named `node_name` (default: the module's name), with
    `parameters` over `params_file`, at `niceness` (None: this process's).

    The parameters go in a second params file with a section for the node: a `-p name:=value` applies to every node
    (`/**`), and rcl lets a params file's section for the node itself win over that, so `-p` could not override a
    value config/nodes.yaml sets for the node (sim_node's target_xyz)."""

    def __init__(self, module: str, parameters: dict, params_file: Path | None = None, niceness: int | None = None,
                 node_name: str | None = None):
        self.name = node_name or module.rsplit(".", 1)[-1]
        self.module, self.parameters, self.params_file, self.niceness = module, parameters, params_file, niceness
        self.overrides: Path | None = None  # the parameters' file while the child runs
        self.process: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"vla_ros-{self.name}-", delete=False) as out:
            yaml.safe_dump({self.name: {"ros__parameters": self.parameters}}, out)
        self.overrides = Path(out.name)
        files = [self.params_file] if self.params_file else []
        command = [sys.executable, "-m", self.module, "--ros-args",
                   *(arg for f in [*files, self.overrides] for arg in ("--params-file", str(f)))]
        self.process = subprocess.Popen(command, preexec_fn=lambda: _prepare_child(self.niceness))  # env inherited
        return self

    def check_running(self) -> None:
        """Raise (one line) if the child has exited."""
        code = self.process.poll()
        if code is not None:
            raise VlaRosError(f"{self.name} (pid {self.process.pid}) exited with code {code}; its log is above")

    def wait_until(self, condition, timeout: float, what: str) -> None:
        """Wait for `condition()` while the child runs; raise (one line) if it exits or `timeout` s pass first."""
        deadline = time.monotonic() + timeout
        while not condition():
            self.check_running()
            if time.monotonic() > deadline:
                raise VlaRosError(f"{self.name} (pid {self.process.pid}): no {what} within {timeout:g} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, then SIGKILL after `timeout` s; the exit code (negative: the signal that ended it)."""
        if self.overrides is not None:
            self.overrides.unlink(missing_ok=True)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
