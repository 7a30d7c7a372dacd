"""Functional core: kinematics, safety, policies, chunk execution, replay. Never imports rclpy."""
