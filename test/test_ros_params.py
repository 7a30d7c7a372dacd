"""config/nodes.yaml lists every node parameter with its built-in default, and the shipped Fast DDS profile is what
the graph relies on (shared memory with a large segment, UDP on loopback only)."""

import xml.etree.ElementTree as ET

import pytest
import yaml

from ros_helpers import ROOT
from vla_ros.ros import ik_node, params, policy_node, safety_node, sim_node

NODES = {"policy_node": policy_node.PARAMETERS, "ik_node": ik_node.PARAMETERS,
         "safety_node": safety_node.PARAMETERS, "sim_node": sim_node.PARAMETERS}


def _flatten(mapping, prefix=""):
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("node", NODES)
def test_nodes_yaml_matches_node_defaults(node):
    config = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    listed = {**_flatten(config["/**"]["ros__parameters"]), **_flatten(config[node]["ros__parameters"])}
    declared = {**params.COMMON, **NODES[node]}
    # every listed key is a real parameter of the node, with the node's own default
    assert set(listed) <= set(declared), set(listed) - set(declared)
    for key, value in listed.items():
        assert value == declared[key], key


def test_fastdds_profile_shared_memory_and_loopback_only():
    root = ET.parse(ROOT / "config" / "fastdds.xml").getroot()
    ns = {"d": "http://www.eprosima.com"}
    shm = root.find(".//d:transport_descriptor[d:type='SHM']", ns)
    assert int(shm.find("d:segment_size", ns).text) >= 32 * 1024 * 1024  # dozens of 640x480 rgb8 frames in flight
    udp = root.find(".//d:transport_descriptor[d:type='UDPv4']", ns)
    assert [a.text for a in udp.findall("d:interfaceWhiteList/d:address", ns)] == ["127.0.0.1"]
    participant = root.find(".//d:participant[@is_default_profile='true']", ns)
    assert participant.find("d:rtps/d:useBuiltinTransports", ns).text == "false"


def test_profile_is_applied_unless_the_user_chose_one(tmp_path):
    env = params.use_fastdds_profile({})
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(params.fastdds_profile())
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    mine = str(tmp_path / "mine.xml")
    assert params.use_fastdds_profile({"FASTDDS_DEFAULT_PROFILES_FILE": mine})["FASTDDS_DEFAULT_PROFILES_FILE"] == mine
