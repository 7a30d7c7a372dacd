"""QoS profiles of the graph, in one place so every node (and the tests) agree.

- sensors (cameras, joint states): best effort, keep last few -- a late frame is useless, and a best-effort
  subscriber also matches the reliable publishers of realsense2_camera / joint_state_broadcaster.
- commands (inter-node actions, controller commands): reliable, keep last 10 -- what ros2_control's JTC and
  forward controllers subscribe with; a dropped command would make the arm stutter.
- latched (the instruction): reliable + transient local, so a node started later still gets the task text.
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT,
                    durability=DurabilityPolicy.VOLATILE)
COMMAND = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
