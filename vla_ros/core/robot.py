"""RobotModel: a robot config (YAML) + its URDF, loaded through pinocchio.

Robots are described by data, not code: joints, arms, grippers, limits, cameras and the real driver's controller
interface all come from `config/robots/<name>.yaml` and the URDF it points at. A user's own robot needs a YAML and a
URDF, no Python. Every inconsistency between the two is a ConfigError naming the file and field.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pinocchio as pin

from vla_ros.core.config import Section, load_yaml
from vla_ros.core.errors import ConfigError, UnknownJointError

CONTROLLER_INTERFACES = (
    "joint_trajectory",  # trajectory_msgs/JointTrajectory: ros2_control JTC, UR scaled JTC, franka arm controller
    "float64_multi_array",  # std_msgs/Float64MultiArray: forward_position_controller
    "interbotix_joint_group",  # interbotix_xs_msgs/JointGroupCommand (WidowX, ALOHA arms)
    "interbotix_joint_single",  # interbotix_xs_msgs/JointSingleCommand (WidowX, ALOHA grippers)
    "gripper_command_action",  # control_msgs/action/GripperCommand (franka_gripper)
)
LIMIT_FIELDS = ("position", "velocity", "acceleration", "jerk", "effort")
_MOVABLE = ("revolute", "prismatic", "continuous", "floating", "planar")


@dataclass(frozen=True)
class JointLimits:
    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    effort: np.ndarray


@dataclass(frozen=True)
class GripperSpec:
    joint: str
    index: int
    open: float  # joint value when fully open
    closed: float  # joint value when fully closed

    def to_joint(self, opening: float) -> float:
        """Normalised opening (1 = open, 0 = closed, clipped) -> joint value."""
        # plain min/max: np.clip on a scalar costs ~5 us, and this runs every control tick
        opening = min(max(float(opening), 0.0), 1.0)
        return self.closed + opening * (self.open - self.closed)

    def opening(self, joint_value: float) -> float:
        return min(max((float(joint_value) - self.closed) / (self.open - self.closed), 0.0), 1.0)


@dataclass(frozen=True)
class ArmSpec:
    name: str
    joints: tuple[str, ...]
    index: np.ndarray
    ee_frame: str
    ee_frame_id: int
    gripper: GripperSpec | None
    home: np.ndarray
    workspace_min: np.ndarray
    workspace_max: np.ndarray
    max_ee_linear_speed: float
    max_ee_angular_speed: float


@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str
    encoding: str
    width: int
    height: int
    fov_y_deg: float | None = None
    pose: tuple[str, tuple[float, ...], tuple[float, ...]] | None = None  # (parent frame, xyz, rpy), optical frame


@dataclass(frozen=True)
class ControllerSpec:
    name: str
    interface: str
    topic: str
    joints: tuple[str, ...]
    prefix: str = ""
    command_name: str = ""
    command_range: tuple[float, float] | None = None  # (open, closed) in command units, gripper controllers
    gripper: GripperSpec | None = None  # the gripper a `command_range` controller drives

    def command_value(self, joint_value: float) -> float:
        """Gripper joint value -> this controller's command units (linear in the opening)."""
        opened, closed = self.command_range
        return closed + self.gripper.opening(joint_value) * (opened - closed)

    def joint_value(self, command_value: float) -> float:
        """Inverse of command_value (clipped to the gripper's open / closed range)."""
        opened, closed = self.command_range
        return self.gripper.to_joint((float(command_value) - closed) / (opened - closed))


@dataclass(frozen=True)
class JointStateSource:
    topic: str
    prefix: str = ""


@dataclass(frozen=True)
class MimicSpec:
    """A URDF <mimic> joint: value = multiplier * leader + offset (pinocchio's reduced model and MuJoCo ignore it)."""

    leader: str
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class _UrdfJoint:
    name: str
    type: str
    limits: dict[str, float]
    mimic: MimicSpec | None


def _parse_urdf(path: Path) -> dict[str, _UrdfJoint]:
    """Joint table of a URDF, with errors that name the file (pinocchio's own parser errors do not)."""
    if not path.is_file():
        raise ConfigError(path, "", "URDF file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ConfigError(path, "", f"malformed URDF XML: {exc}") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read URDF: {exc}") from None
    if root.tag != "robot":
        raise ConfigError(path, "", f"not a URDF: root element is <{root.tag}>, expected <robot>")
    joints = {}
    for element in root.iter("joint"):
        name, kind = element.get("name"), element.get("type")
        if not name or not kind:
            raise ConfigError(path, "joint", "every <joint> needs name and type attributes")
        limits = {}
        limit = element.find("limit")
        if limit is not None:
            for attr in ("lower", "upper", "velocity", "effort"):
                if limit.get(attr) is not None:
                    try:
                        limits[attr] = float(limit.get(attr))
                    except ValueError:
                        raise ConfigError(path, f"joint {name}.limit.{attr}", f"not a number: {limit.get(attr)!r}") from None
        if kind in ("revolute", "prismatic"):
            # urdfdom (pinocchio's parser) rejects these with a vague message; name the joint and attribute instead.
            if limit is None:
                raise ConfigError(path, f"joint {name}", f"{kind} joint has no <limit> element")
            for attr in ("velocity", "effort"):
                if attr not in limits:
                    raise ConfigError(path, f"joint {name}.limit", f"missing {attr} (required for {kind} joints)")
        mimic = element.find("mimic")
        if mimic is not None:
            try:
                mimic = MimicSpec(mimic.get("joint", ""), float(mimic.get("multiplier", 1.0)), float(mimic.get("offset", 0.0)))
            except ValueError:
                raise ConfigError(path, f"joint {name}.mimic", "multiplier and offset must be numbers") from None
        joints[name] = _UrdfJoint(name, kind, limits, mimic)
    return joints


class RobotModel:
    """A robot: config + URDF → reduced pinocchio model over the commanded joints, limits, arms, interfaces."""

    def __init__(self, config_path: Path, urdf_override: Path | None = None):
        self.config_path = Path(config_path).resolve()
        cfg = Section(load_yaml(self.config_path), self.config_path)
        cfg.unknown_keys({
            "name", "description", "urdf", "base_frame", "control_rate_hz", "joint_states", "arms", "locked_joints",
            "limit_defaults", "limits", "cameras", "controllers",
        })
        self.name = cfg.str("name")
        self.description = cfg.str("description", "")
        self.urdf_path = Path(urdf_override).resolve() if urdf_override else cfg.path("urdf")
        self.base_frame = cfg.str("base_frame")
        self.control_rate_hz = cfg.float("control_rate_hz", positive=True)
        urdf_joints = _parse_urdf(self.urdf_path)

        arm_sections = cfg.sections("arms")
        if not arm_sections:
            raise cfg.error("arms", "expected at least one arm")
        commanded: list[str] = []
        for arm in arm_sections:
            names = arm.strs("joints") + ([arm.section("gripper").str("joint")] if arm.has("gripper") else [])
            for name in names:
                if name in commanded:
                    raise arm.error("joints", f"joint {name!r} is used twice")
                self._check_urdf_joint(urdf_joints, name, arm)
                commanded.append(name)
        locked = cfg.section("locked_joints", {})
        for name in locked.data:
            if name not in urdf_joints:
                raise locked.error(name, f"joint not in URDF {self.urdf_path.name}")
        for name, joint in urdf_joints.items():
            if joint.type in _MOVABLE and name not in commanded and not joint.mimic and name not in locked.data:
                raise ConfigError(
                    self.config_path, "arms",
                    f"URDF {self.urdf_path.name} joint {name!r} is not used by any arm; add it to an arm or to locked_joints",
                )

        self.locked_joints = {name: locked.as_float(name, value) for name, value in locked.data.items()}
        self.mimic_joints = {name: j.mimic for name, j in urdf_joints.items() if j.mimic is not None}
        self.model, self.data = self._build_reduced_model(commanded)
        self.joint_names = tuple(self.model.names[1:])
        self.nq = self.model.nq
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        self.limits = self._read_limits(cfg, urdf_joints)

        if not self.model.existFrame(self.base_frame):
            raise cfg.error("base_frame", f"frame {self.base_frame!r} not in URDF {self.urdf_path.name}")
        base_id = self.model.getFrameId(self.base_frame)
        if self.model.frames[base_id].parentJoint != 0:
            raise cfg.error("base_frame", f"frame {self.base_frame!r} moves with a joint; it must be fixed to the URDF root")
        pin.framesForwardKinematics(self.model, self.data, pin.neutral(self.model))
        self._base_inv = self.data.oMf[base_id].inverse()
        self._base_is_root = self._base_inv.isIdentity(1e-12)

        self.arms = tuple(self._read_arm(arm) for arm in arm_sections)
        self.home = np.zeros(self.nq)
        for arm in self.arms:
            self.home[arm.index] = arm.home
            if arm.gripper:
                self.home[arm.gripper.index] = arm.gripper.open
        self.joint_state_sources = tuple(
            JointStateSource(s.str("topic"), s.str("prefix", "")) for s in cfg.sections("joint_states")
        )
        self.cameras = tuple(self._read_camera(c) for c in cfg.sections("cameras", []))
        self.controllers = tuple(self._read_controller(c) for c in cfg.sections("controllers"))
        self._check_controllers_cover_joints(cfg)

    # --- construction helpers -------------------------------------------------------------------------------------

    def _check_urdf_joint(self, urdf_joints: Mapping[str, _UrdfJoint], name: str, arm: Section) -> None:
        joint = urdf_joints.get(name)
        if joint is None:
            raise arm.error("joints", f"joint {name!r} not in URDF {self.urdf_path.name}")
        if joint.type not in ("revolute", "prismatic"):
            raise arm.error(
                "joints", f"joint {name!r} is {joint.type} in {self.urdf_path.name}; commanded joints must be revolute or "
                "prismatic with position limits",
            )
        if joint.mimic:
            raise arm.error("joints", f"joint {name!r} mimics another joint in {self.urdf_path.name}; command the leader")

    def _build_reduced_model(self, commanded: Sequence[str]) -> tuple[pin.Model, pin.Data]:
        try:
            full = pin.buildModelFromUrdf(str(self.urdf_path))
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(self.urdf_path, "", f"pinocchio cannot load the URDF: {str(exc).splitlines()[0]}") from None
        lock_ids, q_lock = [], pin.neutral(full)
        for joint_id in range(1, full.njoints):
            name = full.names[joint_id]
            if name in commanded:
                continue
            lock_ids.append(joint_id)
            if name in self.locked_joints:
                q_lock[full.joints[joint_id].idx_q] = self.locked_joints[name]
        return_model = pin.buildReducedModel(full, lock_ids, q_lock) if lock_ids else full
        return return_model, return_model.createData()

    def _read_limits(self, cfg: Section, urdf_joints: Mapping[str, _UrdfJoint]) -> JointLimits:
        overrides = cfg.section("limits", {})
        defaults = cfg.section("limit_defaults", {})
        defaults.unknown_keys(set(LIMIT_FIELDS) - {"position"})
        for name in overrides.data:
            if name not in self._index:
                raise overrides.error(name, "not a commanded joint of this robot")
        table = {field: np.zeros(self.nq) for field in ("lower", "upper", *LIMIT_FIELDS[1:])}
        for i, name in enumerate(self.joint_names):
            urdf = urdf_joints[name].limits
            values = {"lower": urdf.get("lower"), "upper": urdf.get("upper"), "velocity": urdf.get("velocity"),
                      "acceleration": None, "jerk": None, "effort": urdf.get("effort")}
            for field in ("velocity", "acceleration", "jerk", "effort"):
                if defaults.has(field):
                    values[field] = values.get(field) or defaults.float(field, positive=True)
            if overrides.has(name):
                joint = overrides.section(name)
                joint.unknown_keys(set(LIMIT_FIELDS))
                if joint.has("position"):
                    values["lower"], values["upper"] = joint.floats("position", length=2)
                for field in ("velocity", "acceleration", "jerk", "effort"):
                    if joint.has(field):
                        values[field] = joint.float(field, positive=True)
            for field, value in values.items():
                if value is None:
                    raise ConfigError(
                        self.config_path, f"limits.{name}.{field}",
                        f"missing: not in URDF {self.urdf_path.name} nor in the config (limits or limit_defaults)",
                    )
                table[field][i] = value
            if not table["lower"][i] < table["upper"][i]:
                raise ConfigError(self.config_path, f"limits.{name}.position",
                                  f"lower {table['lower'][i]} must be below upper {table['upper'][i]}")
            for field in ("velocity", "acceleration", "jerk", "effort"):
                if table[field][i] <= 0:
                    raise ConfigError(self.config_path, f"limits.{name}.{field}", f"must be positive, got {table[field][i]}")
        return JointLimits(self.joint_names, table["lower"], table["upper"], table["velocity"], table["acceleration"],
                           table["jerk"], table["effort"])

    def _read_arm(self, arm: Section) -> ArmSpec:
        arm.unknown_keys({"name", "joints", "ee_frame", "home", "gripper", "workspace", "max_ee_speed"})
        joints = tuple(arm.strs("joints"))
        index = np.array([self._index[j] for j in joints], dtype=int)
        ee_frame = arm.str("ee_frame")
        if not self.model.existFrame(ee_frame):
            raise arm.error("ee_frame", f"frame {ee_frame!r} not in URDF {self.urdf_path.name}")
        home = np.array(arm.floats("home", length=len(joints)))
        lower, upper = self.limits.lower[index], self.limits.upper[index]
        outside = np.flatnonzero((home < lower) | (home > upper))
        if outside.size:
            j = outside[0]
            raise arm.error("home", f"{joints[j]} = {home[j]} is outside its limits [{lower[j]}, {upper[j]}]")
        gripper = None
        if arm.has("gripper"):
            g = arm.section("gripper")
            g.unknown_keys({"joint", "open", "closed"})
            gripper = GripperSpec(g.str("joint"), self._index[g.str("joint")], g.float("open"), g.float("closed"))
            if gripper.open == gripper.closed:
                raise g.error("open", "open and closed must differ")
            lo, hi = self.limits.lower[gripper.index], self.limits.upper[gripper.index]
            for key, value in (("open", gripper.open), ("closed", gripper.closed)):
                if not lo <= value <= hi:
                    raise g.error(key, f"{value} is outside the joint's limits [{lo}, {hi}]")
        workspace = arm.section("workspace")
        ws_min, ws_max = np.array(workspace.floats("min", 3)), np.array(workspace.floats("max", 3))
        if not np.all(ws_min < ws_max):
            raise workspace.error("min", f"every component of min {ws_min.tolist()} must be below max {ws_max.tolist()}")
        speed = arm.section("max_ee_speed")
        return ArmSpec(
            name=arm.str("name"), joints=joints, index=index, ee_frame=ee_frame,
            ee_frame_id=self.model.getFrameId(ee_frame), gripper=gripper, home=home,
            workspace_min=ws_min, workspace_max=ws_max,
            max_ee_linear_speed=speed.float("linear", positive=True),
            max_ee_angular_speed=speed.float("angular", positive=True),
        )

    def _read_camera(self, cam: Section) -> CameraSpec:
        cam.unknown_keys({"name", "topic", "encoding", "width", "height", "fov_y_deg", "pose", "rate_hz"})
        pose = None
        if cam.has("pose"):
            p = cam.section("pose")
            parent = p.str("parent")
            if not self.model.existFrame(parent):
                raise p.error("parent", f"frame {parent!r} not in URDF {self.urdf_path.name}")
            pose = (parent, tuple(p.floats("xyz", 3)), tuple(p.floats("rpy", 3)))
        width, height = cam.float("width", positive=True), cam.float("height", positive=True)
        if width != int(width) or height != int(height):
            raise cam.error("width", "width and height must be whole pixels")
        return CameraSpec(
            cam.str("name"), cam.str("topic"), cam.str("encoding"), int(width), int(height),
            cam.float("fov_y_deg", None, positive=True), pose,
        )

    def _read_controller(self, ctl: Section) -> ControllerSpec:
        ctl.unknown_keys({"name", "interface", "topic", "joints", "prefix", "command_name", "command_range"})
        joints = tuple(ctl.strs("joints"))
        for joint in joints:
            if joint not in self._index:
                raise ctl.error("joints", f"joint {joint!r} is not a commanded joint of this robot")
        command_range = gripper = None
        if ctl.has("command_range"):
            r = ctl.section("command_range")
            command_range = (r.float("open"), r.float("closed"))
            if command_range[0] == command_range[1]:
                raise r.error("open", "open and closed must differ")
            gripper = next((a.gripper for a in self.arms if a.gripper and joints == (a.gripper.joint,)), None)
            if gripper is None:
                raise ctl.error("command_range", f"only for a controller of one gripper joint; joints are {list(joints)}")
        return ControllerSpec(
            ctl.str("name"), ctl.choice("interface", CONTROLLER_INTERFACES), ctl.str("topic"), joints,
            ctl.str("prefix", ""), ctl.str("command_name", ""), command_range, gripper,
        )

    def _check_controllers_cover_joints(self, cfg: Section) -> None:
        covered = [j for c in self.controllers for j in c.joints]
        arm_joints = [j for arm in self.arms for j in arm.joints]
        missing = [j for j in arm_joints if j not in covered]
        if missing:
            raise cfg.error("controllers", f"no controller commands joint {missing[0]!r}")
        twice = sorted({j for j in covered if covered.count(j) > 1})
        if twice:
            raise cfg.error("controllers", f"joint {twice[0]!r} is commanded by more than one controller")

    # --- queries ----------------------------------------------------------------------------------------------------

    def arm(self, name: str) -> ArmSpec:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"robot {self.name}: no arm named {name!r} (arms: {', '.join(a.name for a in self.arms)})")

    @property
    def grippers(self) -> dict[str, GripperSpec | None]:
        """Arm name -> its gripper (None for an arm without one), what EE action decoding maps gripper columns onto."""
        return {arm.name: arm.gripper for arm in self.arms}

    @property
    def trajectory_controlled(self) -> bool:
        """A controller of this robot takes a joint_trajectory: its safety filter keeps the trajectory it is sent
        (SafetyFilter keep_trajectory), as safety_node runs it."""
        return any(spec.interface == "joint_trajectory" for spec in self.controllers)

    def new_data(self) -> pin.Data:
        return self.model.createData()

    def indices(self, names: Iterable[str]) -> np.ndarray:
        try:
            return np.array([self._index[n] for n in names], dtype=int)
        except KeyError as exc:
            raise UnknownJointError(f"robot {self.name}: unknown joint {exc.args[0]!r}") from None

    def vector_from(self, names: Sequence[str], values: Sequence[float], default: np.ndarray | None = None) -> np.ndarray:
        """A full q vector from (name, value) pairs in any order; joints not named come from `default`."""
        if len(names) != len(values):
            raise ValueError(f"robot {self.name}: {len(names)} joint names but {len(values)} values")
        q = np.full(self.nq, np.nan) if default is None else np.array(default, dtype=float, copy=True)
        q[self.indices(names)] = values
        if default is None and np.isnan(q).any():
            missing = [self.joint_names[i] for i in np.flatnonzero(np.isnan(q))]
            raise UnknownJointError(f"robot {self.name}: no value for joint {missing[0]!r}")
        return q

    def frame_id(self, frame: str | int) -> int:
        if isinstance(frame, (int, np.integer)):
            return int(frame)
        if not self.model.existFrame(frame):
            raise KeyError(f"robot {self.name}: no frame {frame!r}")
        return self.model.getFrameId(frame)

    def fk(self, q: np.ndarray, frame: str | int, data: pin.Data | None = None) -> pin.SE3:
        """Pose of `frame` in the base frame."""
        data = self.data if data is None else data
        fid = self.frame_id(frame)
        pin.forwardKinematics(self.model, data, q)
        pose = pin.updateFramePlacement(self.model, data, fid)
        return pose.copy() if self._base_is_root else self._base_inv * pose

    def frame_jacobian(self, q: np.ndarray, frame: str | int, data: pin.Data | None = None) -> np.ndarray:
        """(6, nq) Jacobian of `frame`: rows [linear; angular] about the frame origin, in base-frame axes."""
        data = self.data if data is None else data
        jac = pin.computeFrameJacobian(self.model, data, q, self.frame_id(frame), pin.LOCAL_WORLD_ALIGNED)
        if self._base_is_root:
            return jac
        rot = self._base_inv.rotation
        return np.vstack((rot @ jac[:3], rot @ jac[3:]))

    def random_configurations(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, nq) configurations uniformly inside the position limits."""
        return rng.uniform(self.limits.lower, self.limits.upper, size=(count, self.nq))

    def workspace_extent(self, samples: int = 2000, seed: int = 0) -> dict[str, dict[str, list[float] | float]]:
        """Per arm: EE position bounding box and max distance from the base, over random in-limit configurations."""
        rng = np.random.default_rng(seed)
        extent = {}
        configs = self.random_configurations(samples, rng)
        for arm in self.arms:
            points = np.array([self.fk(q, arm.ee_frame_id).translation for q in configs])
            extent[arm.name] = {
                "min": points.min(axis=0).round(4).tolist(),
                "max": points.max(axis=0).round(4).tolist(),
                "max_reach": float(np.linalg.norm(points, axis=1).max().round(4)),
            }
        return extent


def builtin_robot_names() -> list[str]:
    from vla_ros.resources import builtin_names, robot_config_dir

    return builtin_names(robot_config_dir())


def resolve_robot_config(robot: str | Path) -> Path:
    """A built-in robot name or a path to a YAML -> the YAML path (ConfigError if neither)."""
    from vla_ros.resources import resolve_config, robot_config_dir

    return resolve_config(robot, robot_config_dir(), "robot")


def load_robot(robot: str | Path, urdf: Path | None = None) -> RobotModel:
    """Load a built-in robot by name, or a user's robot YAML; `urdf` replaces the URDF the YAML names."""
    return RobotModel(resolve_robot_config(robot), urdf_override=urdf)
