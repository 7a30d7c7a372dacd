"""rclpy node shells over vla_ros.core: policy_node, ik_node, safety_node, sim_node, the controller adapters and
the one-process bringup. See docs/ros_graph.md for the topics, services and parameters."""
