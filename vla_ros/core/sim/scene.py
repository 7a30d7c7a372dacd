"""The simulated robot's world in MuJoCo: the robot's own URDF, a table, a red target and the configured cameras.

The robot is loaded from the same URDF the RobotModel uses (MuJoCo reads URDF directly), so the kinematics that
render are the kinematics the IK and safety layers compute with. Everything else is added with MjSpec in the
robot's base frame: a table top at `table_height`, a floor, lights, the target (a red sphere, on a thin post when
the arm's workspace box keeps the EE above the table) and one MuJoCo camera per robot camera. The scene is
kinematic: `set_joint_positions` places the robot, `render` draws a camera (EGL offscreen, shadows off).
"""

from __future__ import annotations

import os
import weakref
from typing import Iterable

# EGL renders offscreen with no display; must be chosen before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pinocchio as pin  # noqa: E402

from vla_ros.core.errors import ConfigError, VlaRosError  # noqa: E402
from vla_ros.core.sim.placement import sample_target  # noqa: E402

TARGET_RADIUS = 0.02  # m
TARGET_RGBA = (0.85, 0.04, 0.04, 1.0)
TABLE_RGBA = (0.42, 0.45, 0.50, 1.0)  # blue-grey: nothing on the table but the target reads as red
FLOOR_RGBA = (0.22, 0.22, 0.24, 1.0)
POST_RGBA = (0.6, 0.6, 0.6, 1.0)
TABLE_MARGIN = 0.12  # table reaches this far past the workspace boxes and arm bases (m)
TABLE_THICKNESS = 0.04
FLOOR_BELOW_TABLE = 0.75
FLOOR_HALF_SIZE = 4.0
POST_RADIUS = 0.004
# Optical frame (z forward, x right, y down) -> MuJoCo camera frame (looks along -z, x right, y up).
OPTICAL_TO_MUJOCO = np.diag([1.0, -1.0, -1.0])


class SimRenderError(VlaRosError):
    """The simulator cannot render (no usable OpenGL context)."""


def _close_renderers(renderers: dict) -> None:
    for renderer in renderers.values():
        renderer.close()
    renderers.clear()


def _quat(rotation: np.ndarray) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(rotation).reshape(-1))
    return quat


class SimScene:
    """A robot (config + URDF) in a MuJoCo table-top scene with a red target, rendering its configured cameras.

    All positions are in the robot's base frame. Deterministic for a given seed. Not thread-safe (MuJoCo data
    and GL contexts): use one scene from one thread.
    """

    def __init__(self, robot, target_xyz=None, seed: int = 0, cameras: Iterable[str] | None = None,
                 table_height: float = 0.0, target_arm: str | None = None):
        self.robot = robot
        self.table_height = float(table_height)
        self.target_radius = TARGET_RADIUS
        self.target_arm = robot.arm(target_arm).name if target_arm else robot.arms[0].name
        # Every config camera with a pose and field of view is placed in the model (so the target lands in the
        # same spot whichever cameras a caller renders); `cameras` picks the ones `render` serves.
        self._cameras = {c.name: c for c in robot.cameras if c.pose is not None and c.fov_y_deg is not None}
        self.camera_names = self._select_cameras(cameras)
        self._locked_values = robot.locked_joints
        self._mimics = {name: (m.leader, m.multiplier, m.offset) for name, m in robot.mimic_joints.items()}

        spec = self._load_urdf()
        base = spec.body(robot.base_frame)
        if base is None:
            raise ConfigError(robot.config_path, "base_frame",
                              f"{robot.base_frame!r} is not a link of {robot.urdf_path.name}")
        self._add_environment(spec, base)
        for camera in self._cameras.values():
            self._add_camera(spec, camera)
        spec.visual.global_.offwidth = max([c.width for c in self._cameras.values()] + [1])
        spec.visual.global_.offheight = max([c.height for c in self._cameras.values()] + [1])
        # No multisample anti-aliasing: 4x MSAA cuts software-EGL 640x480 throughput by 2-3x (measured), and
        # policies see the frames downscaled to ~224 px, which averages the edges anyway.
        spec.visual.quality.offsamples = 0
        self._compile(spec)  # robot, table and cameras: what the target placement checks visibility against

        arm = robot.arm(self.target_arm)
        if target_xyz is None:
            primary = self._primary_camera()
            target = sample_target(robot, arm, np.random.default_rng(seed), self.table_height, TARGET_RADIUS,
                                   lambda point: primary is None or self._visible(primary, point))
        else:
            target = np.asarray(target_xyz, dtype=float).reshape(-1)
            if target.shape != (3,) or not np.all(np.isfinite(target)):
                raise ValueError(f"SimScene target_xyz must be 3 finite numbers, got {target_xyz!r}")
        self._target = target.copy()
        self._add_target(base, target)
        self._compile(spec)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        # Free the GL contexts while EGL is still loaded: left to interpreter teardown, mujoco's own __del__ fails.
        self._finalizer = weakref.finalize(self, _close_renderers, self._renderers)
        self.set_joint_positions(robot.home)

    # --- building ---------------------------------------------------------------------------------------------------

    def _select_cameras(self, names: Iterable[str] | None) -> tuple[str, ...]:
        configured = [c.name for c in self.robot.cameras]
        names = configured if names is None else list(names)
        for name in names:
            if name not in configured:
                raise ConfigError(self.robot.config_path, "cameras",
                                  f"no camera {name!r}; expected one of {', '.join(configured) or '(none configured)'}")
            if name not in self._cameras:
                index = configured.index(name)
                field = "pose" if self.robot.cameras[index].pose is None else "fov_y_deg"
                raise ConfigError(self.robot.config_path, f"cameras[{index}].{field}", "required by the simulator")
        return tuple(names)

    def _load_urdf(self) -> mujoco.MjSpec:
        try:
            spec = mujoco.MjSpec.from_file(str(self.robot.urdf_path))
        except ValueError as exc:
            problem = str(exc).splitlines()[0]
            raise ConfigError(self.robot.urdf_path, "", f"MuJoCo cannot load the URDF: {problem}") from None
        # Keep every URDF link as its own body (EE frames, camera mounts); MuJoCo would otherwise merge fixed links.
        spec.compiler.fusestatic = False
        return spec

    def _add_environment(self, spec: mujoco.MjSpec, base) -> None:
        """Table, floor and lights, fixed to the base link (itself fixed to the URDF root), in base-frame coords."""
        arms = self.robot.arms
        corners = [arm.workspace_min[:2] for arm in arms] + [arm.workspace_max[:2] for arm in arms]
        corners += [self.robot.fk(self.robot.home, arm.joints[0]).translation[:2] for arm in arms]
        low, high = np.min(corners, axis=0) - TABLE_MARGIN, np.max(corners, axis=0) + TABLE_MARGIN
        centre, half = (low + high) / 2.0, (high - low) / 2.0
        top = self.table_height
        base.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, rgba=TABLE_RGBA,
                      size=[half[0], half[1], TABLE_THICKNESS / 2.0],
                      pos=[centre[0], centre[1], top - TABLE_THICKNESS / 2.0])
        # A finite box, not an infinite plane: MuJoCo draws planes as a grid of quads, ~40 % of a frame's cost here.
        base.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_BOX, rgba=FLOOR_RGBA,
                      size=[FLOOR_HALF_SIZE, FLOOR_HALF_SIZE, 0.01],
                      pos=[centre[0], centre[1], top - FLOOR_BELOW_TABLE - 0.01])
        # Two shadowless directional lights (key from above-front, fill from the side) and a dim headlight.
        base.add_light(name="key", type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, castshadow=False,
                       pos=[centre[0], centre[1], top + 2.0], dir=[-0.3, 0.0, -1.0], diffuse=[0.7, 0.7, 0.7])
        base.add_light(name="fill", type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, castshadow=False,
                       pos=[centre[0], centre[1], top + 2.0], dir=[0.3, 0.6, -1.0], diffuse=[0.3, 0.3, 0.3])
        spec.visual.headlight.diffuse = [0.25, 0.25, 0.25]
        spec.visual.headlight.ambient = [0.2, 0.2, 0.2]

    def _add_camera(self, spec: mujoco.MjSpec, camera) -> None:
        parent_name, xyz, rpy = camera.pose
        parent = spec.body(parent_name)
        if parent is None:
            index = self.robot.cameras.index(camera)
            raise ConfigError(self.robot.config_path, f"cameras[{index}].pose.parent",
                              f"{parent_name!r} is not a link of {self.robot.urdf_path.name}")
        rotation = pin.rpy.rpyToMatrix(*rpy) @ OPTICAL_TO_MUJOCO
        parent.add_camera(name=camera.name, pos=list(xyz), quat=_quat(rotation), fovy=camera.fov_y_deg,
                          resolution=[camera.width, camera.height])

    def _add_target(self, base, centre: np.ndarray) -> None:
        body = base.add_body(name="target", pos=centre.tolist())
        body.add_geom(name="target", type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[TARGET_RADIUS, 0, 0], rgba=TARGET_RGBA)
        post = (centre[2] - TARGET_RADIUS - self.table_height) / 2.0  # half-length of the post under a raised target
        if post > 1e-3:
            body.add_geom(name="target_post", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[POST_RADIUS, post, 0],
                          pos=[0, 0, -TARGET_RADIUS - post], rgba=POST_RGBA)

    def _compile(self, spec: mujoco.MjSpec) -> None:
        try:
            self.model = spec.compile()
        except ValueError as exc:
            problem = str(exc).splitlines()[0]
            raise ConfigError(self.robot.urdf_path, "", f"MuJoCo cannot compile the scene: {problem}") from None
        self.data = mujoco.MjData(self.model)
        self._map_joints()
        base_id = self.model.body(self.robot.base_frame).id
        mujoco.mj_kinematics(self.model, self.data)
        self._world_from_base = pin.SE3(self.data.xmat[base_id].reshape(3, 3).copy(), self.data.xpos[base_id].copy())
        self._base_from_world = self._world_from_base.inverse()

    def _map_joints(self) -> None:
        """qpos addresses of the commanded joints (by name), of mimic followers, and of locked joints."""
        model, robot = self.model, self.robot

        def address(name: str) -> int:
            try:
                return int(model.jnt_qposadr[model.joint(name).id])
            except KeyError:
                raise ConfigError(robot.urdf_path, f"joint {name}", "not found in the MuJoCo model") from None

        self._command_addr = np.array([address(name) for name in robot.joint_names], dtype=int)
        self._locked = [(address(name), value) for name, value in self._locked_values.items()]
        leaders, followers, multipliers, offsets = [], [], [], []
        for follower, (leader, multiplier, offset) in self._mimics.items():
            if leader in robot.joint_names:
                leaders.append(robot.joint_names.index(leader))
                followers.append(address(follower))
                multipliers.append(multiplier)
                offsets.append(offset)
            else:  # follows a locked joint: a constant
                self._locked.append((address(follower), multiplier * self._locked_values.get(leader, 0.0) + offset))
        self._mimic = (np.array(leaders, dtype=int), np.array(followers, dtype=int), np.array(multipliers),
                       np.array(offsets))

    # --- target placement -------------------------------------------------------------------------------------------

    def _primary_camera(self) -> str | None:
        """The first configured camera fixed to the world (not riding on an arm): the one policies servo with."""
        for name in self._cameras:
            if self.model.body_weldid[self.model.camera(name).bodyid[0]] == 0:
                return name
        return None

    def _visible(self, camera: str, point: np.ndarray) -> bool:
        """A target at `point` (base frame) projects well inside `camera`'s image, and nothing (the arm at home,
        the table edge) hides it: rays to the target's centre and rim reach it unobstructed."""
        self.set_joint_positions(self.robot.home)
        spec = self._cameras[camera]
        pixel = self.project(camera, point)
        if pixel is None or not (0.1 * spec.width < pixel[0] < 0.9 * spec.width
                                 and 0.1 * spec.height < pixel[1] < 0.9 * spec.height):
            return False
        origin = self.data.cam_xpos[self.model.camera(camera).id].copy()
        centre = self._world_from_base.act(point)
        geom = np.zeros(1, dtype=np.int32)
        for offset in ([0, 0, 0], [0, 0, TARGET_RADIUS], [TARGET_RADIUS, 0, 0], [-TARGET_RADIUS, 0, 0]):
            direction = centre + np.array(offset) - origin
            distance = np.linalg.norm(direction)
            hit = mujoco.mj_ray(self.model, self.data, origin, direction / distance, None, 1, -1, geom)
            if 0 <= hit < distance - TARGET_RADIUS:
                return False
        return True

    # --- state and queries ------------------------------------------------------------------------------------------

    def set_joint_positions(self, q: np.ndarray) -> None:
        """Place the robot at q (robot.joint_names order); mimic joints follow their leaders."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.robot.nq,):
            raise ValueError(f"robot {self.robot.name}: expected {self.robot.nq} joint positions, got {q.shape}")
        qpos = self.data.qpos
        qpos[self._command_addr] = q
        leaders, followers, multipliers, offsets = self._mimic
        qpos[followers] = q[leaders] * multipliers + offsets
        for addr, value in self._locked:
            qpos[addr] = value
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def link_pose(self, link: str) -> pin.SE3:
        """Pose of a URDF link (MuJoCo body) in the base frame, at the last set_joint_positions."""
        body = self.model.body(link).id
        world = pin.SE3(self.data.xmat[body].reshape(3, 3).copy(), self.data.xpos[body].copy())
        return self._base_from_world * world

    def camera_pose(self, camera: str) -> pin.SE3:
        """The camera's optical frame (z forward, x right, y down) in the base frame, as MuJoCo renders it."""
        cam = self.model.camera(camera).id
        world = pin.SE3(self.data.cam_xmat[cam].reshape(3, 3) @ OPTICAL_TO_MUJOCO, self.data.cam_xpos[cam].copy())
        return self._base_from_world * world

    def project(self, camera: str, point: np.ndarray) -> tuple[float, float] | None:
        """Continuous pixel coordinates (u right, v down; pixel (i, j) covers [i, i+1) x [j, j+1)) of a base-frame
        point in `camera` at its configured resolution, or None when the point is behind the camera."""
        spec = self._cameras[camera]
        local = self.camera_pose(camera).actInv(np.asarray(point, dtype=float))
        if local[2] <= 0:
            return None
        focal = 0.5 * spec.height / np.tan(np.radians(spec.fov_y_deg) / 2.0)
        return spec.width / 2.0 + focal * local[0] / local[2], spec.height / 2.0 + focal * local[1] / local[2]

    def target_position(self) -> np.ndarray:
        """The target's centre in the base frame."""
        return self._target.copy()

    def ee_distance_to_target(self, q: np.ndarray, arm: str | None = None) -> float:
        """Distance (m) from `arm`'s EE frame at q to the target's centre; `arm` defaults to target_arm."""
        spec = self.robot.arm(arm or self.target_arm)
        return float(np.linalg.norm(self.robot.fk(q, spec.ee_frame_id).translation - self._target))

    # --- rendering --------------------------------------------------------------------------------------------------

    def _renderer(self, width: int, height: int) -> mujoco.Renderer:
        renderer = self._renderers.get((width, height))
        if renderer is None:
            try:
                renderer = mujoco.Renderer(self.model, height=height, width=width)
            except mujoco.FatalError as exc:
                raise SimRenderError(
                    f"MuJoCo cannot create an OpenGL context (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}): "
                    f"{exc}; set MUJOCO_GL=egl before anything imports mujoco") from None
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                renderer.scene.flags[flag] = False
            self._renderers[(width, height)] = renderer
        return renderer

    def render(self, camera: str, width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB image (H, W, 3) uint8 of `camera` at the robot's current joint positions; by default at the
        camera's configured resolution (a different size keeps the vertical field of view)."""
        if camera not in self.camera_names:
            raise KeyError(f"robot {self.robot.name}: no simulated camera {camera!r} "
                           f"(cameras: {', '.join(self.camera_names)})")
        spec = self._cameras[camera]
        renderer = self._renderer(width or spec.width, height or spec.height)
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def close(self) -> None:
        """Release the GL contexts (also done when the scene is garbage-collected or the interpreter exits)."""
        self._finalizer()

    def __enter__(self) -> "SimScene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
