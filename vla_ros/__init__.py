"""vla_ros: run robot foundation-model policies on real arms through ROS 2."""

__version__ = "0.1.0"
