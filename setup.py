"""ament_python package that also installs with pip alone (data files land in <prefix>/share/vla_ros)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vla_ros"


def share(subdir: str, pattern: str) -> tuple[str, list[str]]:
    return (f"share/{PACKAGE}/{subdir}", sorted(glob(f"{subdir}/{pattern}")))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        share("launch", "*.launch.py"),
        share("config", "*.*"),
        share("config/robots", "*.yaml"),
        share("config/policies", "*.yaml"),
        share("config/policies/stats", "*.json"),
        share("urdf", "*.urdf"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vla_ros maintainers",
    maintainer_email="maintainers@vla-ros.invalid",
    description="Run robot foundation-model policies on real arms through ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "vla-ros = vla_ros.cli:main",
            "policy_node = vla_ros.ros.policy_node:main",
            "ik_node = vla_ros.ros.ik_node:main",
            "safety_node = vla_ros.ros.safety_node:main",
            "sim_node = vla_ros.ros.sim_node:main",
        ],
    },
)
