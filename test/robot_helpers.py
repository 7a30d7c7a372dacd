"""Build a user's own robot for tests: a 6-DoF arm URDF from standard DH parameters, names unlike any built-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

# Standard DH (a, alpha, d) of a 6-DoF anthropomorphic arm (PUMA-560-like proportions).
DH = [(0.0, np.pi / 2, 0.40), (0.43, 0.0, 0.0), (0.02, np.pi / 2, 0.0), (0.0, -np.pi / 2, 0.43),
      (0.0, np.pi / 2, 0.0), (0.0, 0.0, 0.10)]
JOINTS = [f"axis_{c}" for c in "abcdef"]
TOOL = "flange_tool"


def dh_matrix(theta: float, a: float, alpha: float, d: float) -> np.ndarray:
    ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
    return np.array([[ct, -st * ca, st * sa, a * ct], [st, ct * ca, -ct * sa, a * st], [0, sa, ca, d], [0, 0, 0, 1]])


def dh_fk(q: np.ndarray) -> np.ndarray:
    """Tool pose by the textbook DH product (independent of pinocchio and of the URDF)."""
    pose = np.eye(4)
    for theta, (a, alpha, d) in zip(q, DH):
        pose = pose @ dh_matrix(theta, a, alpha, d)
    return pose


def _rpy(rot: np.ndarray) -> tuple[float, float, float]:
    # URDF rpy = Rz(yaw) Ry(pitch) Rx(roll)
    pitch = np.arcsin(-np.clip(rot[2, 0], -1, 1))
    return float(np.arctan2(rot[2, 1], rot[2, 2])), float(pitch), float(np.arctan2(rot[1, 0], rot[0, 0]))


def dh_urdf() -> str:
    """URDF whose joint i frame sits at DH frame i-1 (axis z): origin of joint i+1 = DH_i(theta=0)."""
    links = ["mount_plate"] + [f"segment_{c}" for c in "abcdef"]
    parts = ['<?xml version="1.0"?>', '<robot name="dh_six">']
    for link in links + [TOOL]:
        parts.append(f'  <link name="{link}"><inertial><mass value="1.0"/>'
                     '<inertia ixx="0.01" ixy="0" ixz="0" iyy="0.01" iyz="0" izz="0.01"/></inertial></link>')
    offset = np.eye(4)  # joint 1 at the mount plate
    for i, name in enumerate(JOINTS):
        xyz = " ".join(f"{v:.17g}" for v in offset[:3, 3])
        rpy = " ".join(f"{v:.17g}" for v in _rpy(offset[:3, :3]))
        parts.append(f'  <joint name="{name}" type="revolute"><parent link="{links[i]}"/><child link="{links[i + 1]}"/>'
                     f'<origin xyz="{xyz}" rpy="{rpy}"/><axis xyz="0 0 1"/>'
                     '<limit lower="-3.0" upper="3.0" velocity="2.0" effort="50"/></joint>')
        a, alpha, d = DH[i]
        offset = dh_matrix(0.0, a, alpha, d)
    xyz = " ".join(f"{v:.17g}" for v in offset[:3, 3])
    rpy = " ".join(f"{v:.17g}" for v in _rpy(offset[:3, :3]))
    parts.append(f'  <joint name="tool_mount" type="fixed"><parent link="{links[-1]}"/><child link="{TOOL}"/>'
                 f'<origin xyz="{xyz}" rpy="{rpy}"/></joint>')
    parts.append("</robot>")
    return "\n".join(parts) + "\n"


def dh_config(urdf_name: str = "dh_six.urdf") -> dict:
    return {
        "name": "dh_six",
        "urdf": urdf_name,
        "base_frame": "mount_plate",
        "control_rate_hz": 100,
        "joint_states": [{"topic": "/dh_six/joint_states", "prefix": ""}],
        "arms": [{
            "name": "main", "joints": JOINTS, "ee_frame": TOOL, "home": [0.0, 0.3, 0.2, 0.0, 0.5, 0.0],
            "workspace": {"min": [-1.0, -1.0, 0.0], "max": [1.0, 1.0, 1.5]},
            "max_ee_speed": {"linear": 0.5, "angular": 1.0},
        }],
        "limit_defaults": {"acceleration": 5.0, "jerk": 200.0},
        "controllers": [{"name": "arm", "interface": "float64_multi_array",
                         "topic": "/forward_position_controller/commands", "joints": JOINTS}],
        "cameras": [],
    }


def write_dh_robot(directory: Path, config: dict | None = None, urdf_text: str | None = None) -> Path:
    """Write the DH robot's URDF + YAML into `directory`; return the YAML path."""
    config = dh_config() if config is None else config
    (directory / "dh_six.urdf").write_text(dh_urdf() if urdf_text is None else urdf_text)
    path = directory / "dh_six.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
