"""Start the vla_ros graph as separate processes (a ROS 2 install with launch_ros).

    ros2 launch vla_ros bringup.launch.py robot:=ur5 policy:=baseline sim:=true
    ros2 launch vla_ros bringup.launch.py robot:=widowx controller_interface:=float64_multi_array

Arguments: robot, policy, sim (also start sim_node), controller_interface ("" or float64_multi_array),
params_file (default config/nodes.yaml), fastdds_profile (default config/fastdds.xml; "" = Fast DDS defaults),
discovery_range (ROS_AUTOMATIC_DISCOVERY_RANGE, default LOCALHOST), niceness (the control nodes run under
`nice -n <niceness>`, default -10: ahead of other busy processes on the robot PC; without the permission `nice`
warns and they run at normal priority). The same nodes run in one process with `vla-ros bringup`. ik_node always
starts; with a joint-space policy it simply receives nothing.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from vla_ros.resources import share_dir


def generate_launch_description() -> LaunchDescription:
    config = share_dir() / "config"
    arg = LaunchConfiguration
    arguments = [
        DeclareLaunchArgument("robot", default_value="franka", description="built-in robot or robot YAML path"),
        DeclareLaunchArgument("policy", default_value="baseline", description="built-in policy or policy YAML path"),
        DeclareLaunchArgument("sim", default_value="false", description="also start sim_node"),
        DeclareLaunchArgument("controller_interface", default_value="",
                              description="float64_multi_array replaces the interbotix / GripperCommand interfaces"),
        DeclareLaunchArgument("params_file", default_value=str(config / "nodes.yaml")),
        DeclareLaunchArgument("fastdds_profile", default_value=str(config / "fastdds.xml")),
        DeclareLaunchArgument("discovery_range", default_value="LOCALHOST"),
        DeclareLaunchArgument("niceness", default_value="-10"),
    ]
    environment = [
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", arg("fastdds_profile")),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", arg("fastdds_profile")),
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", arg("discovery_range")),
    ]
    common = {"robot": arg("robot"), "controller_interface_override": arg("controller_interface")}

    def node(executable: str, extra: dict | None = None, **kwargs) -> Node:
        # namespace given, so the node's name is fully specified and launch_ros writes the dict under it: under
        # /** (no namespace) it lost to the params file's own section for the node (policy_node's `policy`)
        return Node(package="vla_ros", executable=executable, name=executable, namespace="", output="screen",
                    parameters=[arg("params_file"), {**common, **(extra or {})}], **kwargs)

    control = {"prefix": ["nice -n ", arg("niceness")]}
    nodes = [
        node("policy_node", {"policy": arg("policy")}, **control),
        node("ik_node", **control),
        node("safety_node", **control),
        node("sim_node", condition=IfCondition(arg("sim"))),
    ]
    return LaunchDescription(arguments + environment + nodes)
