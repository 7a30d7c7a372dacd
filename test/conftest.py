"""Test environment: DDS on loopback, a fresh ROS domain per rclpy test, hypothesis profiles."""

import itertools
import os

# Before anything imports rclpy: keep DDS discovery on loopback, never on the LAN.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 2))
# MuJoCo picks its GL backend at first import: headless software EGL for the simulated cameras.
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Valid Fast DDS domain ids are 0..101 (and 215..232); spread tests over 1..100 starting from a per-process offset
# so two test runs on one machine rarely share a domain.
_domains = itertools.cycle(range(1, 101))
for _ in range(os.getpid() % 100):
    next(_domains)


@pytest.fixture
def ros_domain_id() -> int:
    """A ROS domain id this test has to itself."""
    return next(_domains)


@pytest.fixture
def ros_context(ros_domain_id):
    """An initialised rclpy context on its own domain; shut down after the test."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    yield context
    context.try_shutdown()


@pytest.fixture(scope="module")
def franka():
    """The built-in Franka RobotModel (one per test module)."""
    from vla_ros.core.robot import load_robot

    return load_robot("franka")


@pytest.fixture(scope="module")
def aloha():
    """The built-in ALOHA RobotModel (one per test module)."""
    from vla_ros.core.robot import load_robot

    return load_robot("aloha")
