"""launch/bringup.launch.py builds, declares robot / policy / sim and starts the four nodes with the shipped
Fast DDS profile. Needs launch_ros (a ROS install); skipped on a pip-only install where it is not importable."""

import importlib.util
from pathlib import Path

import pytest

launch = pytest.importorskip("launch")
launch_ros = pytest.importorskip("launch_ros")

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable  # noqa: E402
from launch_ros.actions import Node  # noqa: E402
from launch_ros.utilities import evaluate_parameters  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _description():
    spec = importlib.util.spec_from_file_location("bringup_launch", ROOT / "launch" / "bringup.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def _context(**arguments):
    context = launch.LaunchContext()
    context.launch_configurations.update(arguments)
    return context


def test_launch_description_declares_arguments_and_environment():
    entities = _description().entities
    declared = {e.name: e.default_value for e in entities if isinstance(e, DeclareLaunchArgument)}
    assert {"robot", "policy", "sim", "controller_interface", "params_file", "fastdds_profile"} <= set(declared)
    context = _context()
    for entity in entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)  # applies defaults
    env = {}
    for entity in entities:
        if isinstance(entity, SetEnvironmentVariable):
            name = launch.utilities.perform_substitutions(context, entity.name)
            env[name] = launch.utilities.perform_substitutions(context, entity.value)
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds.xml")
    assert Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]).is_file()
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


@pytest.mark.parametrize("sim", ["true", "false"])
def test_launch_nodes_get_robot_policy_and_sim(sim):
    entities = _description().entities
    context = _context(robot="ur5", policy="baseline", sim=sim, controller_interface="float64_multi_array")
    for entity in entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)
    nodes = [e for e in entities if isinstance(e, Node)]
    started = {n.node_executable for n in nodes if n.condition is None or n.condition.evaluate(context)}
    expected = {"policy_node", "ik_node", "safety_node"} | ({"sim_node"} if sim == "true" else set())
    assert {launch.utilities.perform_substitutions(context, e) if not isinstance(e, str) else e for e in started} == expected
    for node in nodes:
        params = evaluate_parameters(context, node._Node__parameters)
        files = [p for p in params if not isinstance(p, dict)]
        values = {k: v for p in params if isinstance(p, dict) for k, v in p.items()}
        assert files and str(files[0]).endswith("nodes.yaml")
        assert values["robot"] == "ur5"
        assert values["controller_interface_override"] == "float64_multi_array"
        if "policy_node" in str(node.node_executable):
            assert values["policy"] == "baseline"
        # the argument dict is written under the node's own name, so it wins over the params file's section for the
        # node (under /** config/nodes.yaml's `policy_node: policy: baseline` won over policy:=...)
        node._perform_substitutions(context)
        executable = launch.utilities.perform_substitutions(context, node.node_executable) \
            if not isinstance(node.node_executable, str) else node.node_executable
        assert node.is_node_name_fully_specified() and node.node_name == f"/{executable}"
        prefix = launch.utilities.perform_substitutions(context, node.process_description.prefix)
        # the control nodes run ahead of other busy processes of the robot PC; the simulated robot does not
        assert prefix == ("" if "sim_node" in str(node.node_executable) else "nice -n -10")
