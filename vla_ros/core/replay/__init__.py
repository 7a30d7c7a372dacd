"""Offline evaluation: replay a rosbag2 recording through the core control chain (executor -> IK -> safety)."""
