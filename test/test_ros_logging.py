"""RateLimitedLog: one line per call site and period, the rest counted; any level from one logger (rclpy refuses a
call site that changes severity, which once crashed a node's callback)."""

import time

from vla_ros.ros.base import RateLimitedLog


class _Recorder:
    def __init__(self):
        self.lines = []

    def error(self, message):
        self.lines.append(("error", message))

    def warning(self, message):
        self.lines.append(("warning", message))

    def info(self, message):
        self.lines.append(("info", message))


class _Node:
    def __init__(self, logger):
        self._logger = logger

    def get_logger(self):
        return self._logger


def test_one_line_per_key_and_period_the_rest_counted():
    recorder = _Recorder()
    log = RateLimitedLog(_Node(recorder), period=0.05)
    for _ in range(3):
        log("warning", "stale", "holding")
    log("error", "bad", "refused")
    time.sleep(0.06)
    log("warning", "stale", "holding")
    assert recorder.lines == [("warning", "holding"), ("error", "refused"),
                              ("warning", recorder.lines[2][1])]
    assert recorder.lines[2][1].startswith("holding (2 more in the last 0.")


def test_levels_mix_on_a_real_rclpy_logger(ros_context):
    from rclpy.node import Node

    node = Node("rate_limited_log_test", context=ros_context)
    try:
        log = RateLimitedLog(node, period=0.0)
        for level in ("warning", "error", "info", "error", "warning"):
            log(level, level, f"a {level} line")  # rclpy raises if one call site changes severity
    finally:
        node.destroy_node()
