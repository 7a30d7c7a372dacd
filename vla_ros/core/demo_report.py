"""What the demo reports, computed from what it recorded (pure: no rclpy, no clocks).

Camera -> command latency of a chunk: from the capture stamp of the camera frame the policy saw to the first
controller command (as received on the controller topic) that carries an action of that chunk. It is what a user
feels: camera exposure to the arm acting on what the camera saw — transport, inference, executor hand-over and
the IK / safety hops included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_ros.core.plots import JointSeries, plot_joint_series
from vla_ros.core.camera import PinholeCamera
from vla_ros.core.robot import CameraSpec, RobotModel

SUMMARY_KEYS = ("ticks", "latency_p50_ms", "latency_p99_ms", "interventions", "target_reached")


def camera_to_command_latencies(adoptions: list[tuple[float, float]], command_times: np.ndarray) -> np.ndarray:
    """Seconds, one per adopted chunk that reached the controller: adoptions = [(tick time, capture stamp)]."""
    command_times = np.sort(np.asarray(command_times, dtype=float))
    latencies = []
    for tick_time, stamp in adoptions:
        k = np.searchsorted(command_times, tick_time)
        if k < len(command_times):
            latencies.append(command_times[k] - stamp)
    return np.array(latencies)


def percentile_ms(values: np.ndarray, q: float) -> float | None:
    return None if len(values) == 0 else round(float(np.percentile(values, q)) * 1e3, 2)


def plot_commanded_vs_measured(path: Path, robot: RobotModel, commands: tuple[np.ndarray, np.ndarray],
                               measured: tuple[np.ndarray, np.ndarray], start: float) -> Path:
    (ct, cq), (mt, mq) = commands, measured
    series = [JointSeries("measured (sim joint_states)", mt - start, mq, {"color": "0.6", "lw": 1.0}),
              JointSeries("commanded (controller topic)", ct - start, cq, {"color": "tab:blue", "lw": 1.2})]
    return plot_joint_series(path, robot.joint_names, series, "time since start [s]")


def draw_chunk_on_frame(pixels: np.ndarray, robot: RobotModel, camera: CameraSpec, q: np.ndarray,
                        paths: dict[str, np.ndarray], target: np.ndarray | None) -> np.ndarray:
    """The camera frame with each arm's predicted EE path (the chunk) and the target drawn on it."""
    import cv2

    image = np.ascontiguousarray(pixels[..., ::-1])  # OpenCV draws in BGR
    pinhole = PinholeCamera.from_spec(camera)
    origin, rotation = pinhole.pose_in_base(robot, q)

    def pixel(point):
        uv = pinhole.project(point, origin, rotation, camera.width, camera.height)
        return None if uv is None else (int(round(uv[0])), int(round(uv[1])))

    colours = [(255, 160, 0), (0, 200, 255), (255, 0, 200)]
    for k, points in enumerate(paths.values()):
        uvs = [uv for uv in map(pixel, points) if uv is not None]
        if len(uvs) > 1:
            cv2.polylines(image, [np.array(uvs, dtype=np.int32)], False, colours[k % len(colours)], 2, cv2.LINE_AA)
        if uvs:
            cv2.circle(image, uvs[-1], 5, colours[k % len(colours)], -1, cv2.LINE_AA)
    if target is not None and (uv := pixel(target)) is not None:
        cv2.drawMarker(image, uv, (0, 255, 0), cv2.MARKER_CROSS, 16, 2)
    return image[..., ::-1]


def format_summary(summary: dict) -> str:
    lines = [f"vla_ros demo: robot {summary['robot']}, policy {summary['policy']} (a classical baseline, not a VLA)",
             f"  ran {summary['duration_s']:.1f} s: {summary['ticks']} control ticks, {summary['commands']} controller "
             f"messages (arm controller at {summary['command_rate_hz']:.1f} Hz; topics {', '.join(summary['controller_topics'])})",
             f"  camera -> command latency: p50 {summary['latency_p50_ms']} ms, p99 {summary['latency_p99_ms']} ms "
             f"over {summary['latency_chunks']} chunks"]
    interventions = {k: v for k, v in summary["interventions"].items() if v}
    lines.append("  safety interventions: " + (", ".join(f"{k} {v}" for k, v in sorted(interventions.items()))
                                                or "none"))
    changes = ", ".join(f"{k} x{v}" for k, v in summary["safety_mode_changes"].items()) or "none"
    lines.append(f"  safety node: {summary['safety_hold_ticks']} hold ticks during the run (no target for a controller "
                 f"delay), {summary['safety_startup_hold_ticks']} while the policy started; mode changes: {changes}"
                 + (" (every core busy)" if summary["cpu_load"] else ""))
    lines.append(f"  independent limit check of {summary['checked_commands']} sent commands: "
                 f"{summary['violations']} violations")
    verdict = "REACHED" if summary["target_reached"] else "NOT reached"
    lines.append(f"  target {verdict}: EE {summary['final_distance_m'] * 100:.1f} cm from the target at the end "
                 f"(closest {summary['min_distance_m'] * 100:.1f} cm; threshold {summary['reach_threshold_m'] * 100:.0f} cm)")
    lines += [f"  wrote {path}" for path in summary["outputs"]]
    return "\n".join(lines)
