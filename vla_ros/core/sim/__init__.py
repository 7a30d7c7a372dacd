"""The simulated robot's pure core: joint tracking and the MuJoCo scene. No rclpy, time injected.

    from vla_ros.core.sim.tracker import JointTracker, TrackerConfig   # numpy only
    from vla_ros.core.sim.scene import SimScene                       # imports mujoco (selects EGL)

The ROS shell (vla_ros/ros/sim_node.py) feeds controller commands into a JointTracker, steps it on its clock,
places a SimScene at the tracked joint positions and publishes joint states and rendered camera images.
`scene` is a separate import because importing it loads MuJoCo and sets MUJOCO_GL=egl (unless already set).
"""
