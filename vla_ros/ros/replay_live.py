"""`vla-ros replay BAG --live`: republish a bag into a running ROS graph with /clock, to test the live nodes end to
end.

Every topic is published with its recorded type, payloads forwarded as recorded (no deserialization), at the pace
of the bag's log times scaled by `rate`, while /clock (rosgraph_msgs/Clock) carries bag time; start the nodes under
test with use_sim_time:=true. Topics whose message package is not importable here are skipped and listed.
Reliable publishers (they match best-effort and reliable subscribers alike); topics recorded from transient-local
publishers (the instruction) are republished transient-local, so late subscribers still get them.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from vla_ros.core.replay.bag import Bag



def _message_class(msgtype: str):
    """'pkg/msg/Name' -> the rclpy message class, or None when the package is not importable."""
    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


def republish(bag_path: Path, remaps: dict[str, str], rate: float = 1.0, clock_hz: float = 100.0,
              discovery_wait: float = 1.0) -> int:
    """Publish the bag; before the first message, wait up to `discovery_wait` s (wall time) for every topic to have
    a subscriber, so the start of the bag is not lost to DDS discovery."""
    from vla_ros.ros.params import use_fastdds_profile

    use_fastdds_profile()  # before rclpy.init: shipped Fast DDS profile, discovery on loopback unless set otherwise
    import rclpy
    from rclpy.duration import Duration
    from rosgraph_msgs.msg import Clock

    from vla_ros.ros import qos

    with Bag(bag_path, remaps) as bag:
        duration = bag.duration
        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node("vla_ros_replay", context=context)
        try:
            publishers, skipped = {}, []
            for topic in bag.topics.values():
                cls = _message_class(topic.msgtype)
                if cls is None:
                    skipped.append(f"{topic.name} [{topic.msgtype}]")
                    continue
                publishers[topic.name] = node.create_publisher(cls, topic.name,
                                                               qos.LATCHED if topic.latched else qos.COMMAND)
            clock = node.create_publisher(Clock, "/clock", qos.COMMAND)
            if skipped:
                print(f"not republished (message package not importable): {', '.join(skipped)}")

            def publish_clock(bag_time: float) -> None:
                message = Clock()
                ns = int(round(bag_time * 1e9))
                message.clock.sec, message.clock.nanosec = ns // 10**9, ns % 10**9
                clock.publish(message)

            publish_clock(bag.start_time)
            deadline = time.monotonic() + discovery_wait
            while time.monotonic() < deadline and not all(p.get_subscription_count() for p in publishers.values()):
                time.sleep(0.01)
            wall_start, count = time.monotonic(), 0
            for message in bag.messages(publishers):
                due = wall_start + (message.log_time - bag.start_time) / rate
                while (wall := time.monotonic()) < due:  # keep /clock ticking through gaps between messages
                    publish_clock(bag.start_time + (wall - wall_start) * rate)
                    time.sleep(min(1.0 / clock_hz, due - wall))
                publish_clock(message.log_time)
                publishers[message.topic].publish(bytes(message.raw))
                count += 1
            # Reliable samples not yet acknowledged are dropped with their writer: without this the bag's last
            # messages could be lost to a subscriber on a busy machine (seen in CI: the last joint state of ten).
            for publisher in [*publishers.values(), clock]:
                publisher.wait_for_all_acked(Duration(seconds=2.0))
        finally:
            node.destroy_node()
            context.try_shutdown()
    print(f"republished {count} messages of {len(publishers)} topics ({duration:.2f} s of bag time at "
          f"{rate:g}x)")
    return 0
