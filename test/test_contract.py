"""The action-contract self-test (vla_ros/core/contract.py, `vla-ros check-policy`) and the gripper joint span of the
action side: a policy that holds still keeps the robot still, for every shipped config on its robot; deliberately
mismatched configs fail with the cause; the openpi ALOHA gripper drift is gone."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml

from policies_helpers import changed_config, franka_with_wrist_camera, shipped_policy
from test_policies_act import tiny_config
from vla_ros import cli
from vla_ros.core.contract import check_contract, offset_state, run_closed_loop
from vla_ros.core.errors import ConfigError
from vla_ros.core.ik import ee_commands_from_action
from vla_ros.core.pipeline import joint_targets_from_action
from vla_ros.core.policies import make_policy
from vla_ros.core.policies.act import ACTNetwork
from vla_ros.core.robot import load_robot
from vla_ros.core.types import ActionSpace, GripperConvention
from vla_ros.peer_servers import LoopbackOpenpiServer
from vla_ros.resources import builtin_names, policy_config_dir

ALOHA_SPAN = {"joint_open": 0.058, "joint_closed": 0.01844}  # ALOHA datasets' finger span (PUPPET_GRIPPER_POSITION_*)
LEROBOT_DATA = policy_config_dir().parents[1] / "test" / "data" / "lerobot"


@pytest.fixture(scope="module")
def widowx():
    return load_robot("widowx")


def state_opening(position: float) -> float:
    """The finger position as ALOHA's datasets normalise it (what the issue's 0.975 -> 0.74 drift is measured in)."""
    return (position - ALOHA_SPAN["joint_closed"]) / (ALOHA_SPAN["joint_open"] - ALOHA_SPAN["joint_closed"])


# --- the drift the self-test exists for ------------------------------------------------------------------------------


def test_openpi_server_answering_the_state_holds_aloha_grippers_over_29_chunks(aloha):
    """openpi's protocol with a server that answers the observed state as its action (a policy that holds still),
    through the real client and the real chain for 29 chunks: the grippers stay within 0.01 of their opening. With the
    action side mapping over the robot's 0.021..0.057 m instead of the state side's 0.01844..0.058 m they drifted
    from 0.975 to 0.74."""
    def echo(request: dict) -> dict:
        return {"actions": np.tile(request["state"], (50, 1))}

    with LoopbackOpenpiServer(echo) as server:
        policy = shipped_policy("openpi_pi0_aloha", aloha, url=server.url)
        run = run_closed_loop(aloha, policy, policy.infer, aloha.home, chunks=29)
        policy.close()
    assert len(run.decoded_rows) == 29 and run.rejected is None
    positions = np.array(run.positions)
    for arm in aloha.arms:
        openings = np.array([state_opening(p) for p in positions[:, arm.gripper.index]])
        assert np.abs(openings - openings[0]).max() <= 0.01, (arm.name, openings[0], openings[-1])
        assert np.abs(positions[:, arm.index] - aloha.home[arm.index]).max() <= 1e-3


# --- the gripper joint span of the action side -----------------------------------------------------------------------


def test_action_gripper_maps_over_the_declared_span_in_joint_and_ee_paths(aloha):
    """0.975 of ALOHA's dataset span is the vx300s finger at 0.057 m (its open stop): both the joint-space path and
    the EE path (the opening an EE command carries, over the robot's range) land there."""
    left = aloha.arm("left")
    convention = GripperConvention(1.0, 0.0, **ALOHA_SPAN)
    value = state_opening(0.057)
    joint_space = ActionSpace("joint_pos", arms=("left",), joints_per_arm=(6,), gripper=convention)
    targets = joint_targets_from_action(joint_space, np.r_[left.home, value], aloha, aloha.home, 0.02)
    assert targets[left.gripper.index] == pytest.approx(0.057, abs=1e-9)
    half = convention.to_joint(0.5, left.gripper)
    assert half == pytest.approx(0.01844 + 0.5 * (0.058 - 0.01844))
    ee_space = ActionSpace("ee_delta", arms=("left",), gripper=convention)
    action = np.r_[np.zeros(6), 0.5]
    command = ee_commands_from_action(ee_space, action, ["left", "right"], {"left": left.gripper})["left"]
    assert left.gripper.to_joint(command.gripper) == pytest.approx(half)
    assert convention.to_joint(1.0, left.gripper) == pytest.approx(left.gripper.open)  # 0.058: past the stop
    with pytest.raises(ConfigError, match="declares a joint span but arm 'left' has no gripper spec"):
        ee_commands_from_action(ee_space, action, ["left", "right"])


@pytest.mark.parametrize("gripper, message", [
    ({"open": 1.0, "closed": 0.0, "joint_open": 0.058},
     r"action_space\.gripper\.joint_closed: give both joint_open and joint_closed"),
    ({"open": 1.0, "closed": 0.0, "joint_open": 1.4910, "joint_closed": -0.6213},  # OFT's motor range, in rad
     r"action_space\.gripper\.joint_open: the span -0\.6213\.\.1\.491 \(closed\.\.open\) lies mostly outside the "
     r"range of arm 'left' gripper follower_left/left_finger \(open 0\.057, closed 0\.021\); give it in that joint's"),
    ({"open": 1.0, "closed": 0.0, "joint_open": 0.01844, "joint_closed": 0.058},
     r"action_space\.gripper\.joint_open: the span 0\.058\.\.0\.01844 \(closed\.\.open\) runs the other way than arm "
     r"'left' gripper"),
    ({"open": 1.0, "closed": 1.0}, r"action_space\.gripper\.open: open and closed must differ"),
])
def test_bad_gripper_span_is_one_line_naming_the_field(aloha, gripper, message):
    config = yaml.safe_load((policy_config_dir() / "openvla_oft_aloha.yaml").read_text())
    config["action_space"]["gripper"] = gripper
    with pytest.raises(ConfigError, match=message):
        make_policy(config, aloha, source=policy_config_dir() / "openvla_oft_aloha.yaml")


def test_state_gripper_span_is_checked_by_the_same_rules(aloha):
    config = yaml.safe_load((policy_config_dir() / "openpi_pi0_aloha.yaml").read_text())
    config["request"]["state"]["parts"][1] = {"gripper": "left", "joint_open": 1.4910, "joint_closed": -0.6213}
    with pytest.raises(ConfigError, match=r"request\.state\.parts\[1\]\.joint_open: the span .* lies mostly outside"):
        make_policy(config, aloha, source=policy_config_dir() / "openpi_pi0_aloha.yaml")


# --- the audit: every shipped config on its robot --------------------------------------------------------------------

# shipped config -> the robots it is written for ("franka+wrist": franka with the wrist camera DROID needs)
ROBOTS = {
    "act_local": ["aloha"], "baseline": ["franka", "widowx", "ur5", "aloha"], "crossformer_aloha": ["aloha"],
    "gr00t_n15_aloha": ["aloha"], "gr00t_n16_widowx": ["widowx"], "lerobot_act": ["aloha"],
    "lerobot_async_act_aloha": ["aloha"], "lerobot_diffusion": ["franka"], "octo_widowx": ["widowx"],
    "openpi_pi0_aloha": ["aloha"], "openpi_pi0fast_droid": ["franka+wrist"], "openvla_bridge": ["widowx"],
    "openvla_oft_aloha": ["aloha"], "openvla_oft_bridge": ["widowx"], "playback": ["franka"],
}


@pytest.fixture(scope="module")
def local_files(tmp_path_factory):
    """What the shipped configs point at on a user's disk: a tiny ACT state dict + config (act_local), a recording
    (playback), a franka with a wrist camera (DROID)."""
    directory = tmp_path_factory.mktemp("contract")
    torch.manual_seed(0)
    config = tiny_config()
    torch.save(ACTNetwork(config).state_dict(), directory / "model.pt")
    (directory / "act_config.json").write_text(json.dumps(config.to_dict()))
    np.savez(directory / "recording.npz", actions=np.zeros((20, 7)), times=np.arange(20) * 0.1)
    franka_with_wrist_camera(directory)
    return directory


def check_policy_args(name: str, robot: str, directory) -> list[str]:
    """`vla-ros check-policy` arguments for a shipped config, with the files it names replaced by `directory`'s."""
    policy = name
    if name == "act_local":
        policy = str(changed_config(name, directory, artifact=str(directory / "model.pt"),
                                    model=str(directory / "act_config.json")))
    elif name == "playback":
        policy = str(changed_config(name, directory, recording=str(directory / "recording.npz")))
    extra = []
    if name == "lerobot_act":
        extra = ["--checkpoint", str(LEROBOT_DATA / "act_aloha" / "pretrained_model")]
    elif name == "lerobot_diffusion":
        extra = ["--checkpoint", str(LEROBOT_DATA / "diffusion_franka" / "pretrained_model")]
    robot = str(directory / "franka_wrist.yaml") if robot == "franka+wrist" else robot
    return ["check-policy", policy, "--robot", robot, *extra]


def test_the_audit_covers_every_shipped_config():
    assert sorted(ROBOTS) == sorted(builtin_names(policy_config_dir()))


@pytest.mark.parametrize("name, robot", [(name, robot) for name, robots in ROBOTS.items() for robot in robots])
def test_every_shipped_config_holds_still_on_its_robot(local_files, capsys, name, robot):
    code = cli.main(check_policy_args(name, robot, local_files))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS: a policy that holds still keeps the robot still" in out
    assert "state home:" in out and "state home+offsets:" in out and "MOVED" not in out


# --- deliberately mismatched configs fail, with the cause ------------------------------------------------------------


def check(name: str, robot, **change):
    config = yaml.safe_load((policy_config_dir() / f"{name}.yaml").read_text())
    config.update(change)
    policy = make_policy(config, robot, source=policy_config_dir() / f"{name}.yaml")
    return check_contract(policy, robot, [("home", robot.home), ("home+offsets", offset_state(robot))])


def test_the_aloha_gripper_span_mismatch_fails_naming_both_spans(aloha, tmp_path, capsys):
    space = yaml.safe_load((policy_config_dir() / "openpi_pi0_aloha.yaml").read_text())["action_space"]
    space["gripper"] = {"open": 1.0, "closed": 0.0}  # what the config said before: the robot's 0.021..0.057 m
    path = changed_config("openpi_pi0_aloha", tmp_path, action_space=space)
    assert cli.main(["check-policy", str(path), "--robot", "aloha"]) == 1
    out = capsys.readouterr().out
    assert "follower_left/left_finger: state side normalises over 0.01844..0.058 m, action side maps over " \
           "0.021..0.057 m: a hold-still policy moves it" in out
    assert out.rstrip().splitlines()[-1].startswith("FAIL: a policy that holds still moves the robot: state home:")
    report = check("openpi_pi0_aloha", aloha, action_space=space)
    fingers = [m for m in report.states[0].motions if m.name.endswith("left_finger")]
    assert len(fingers) == 2 and all(0.05 < m.opening_motion < 0.1 for m in fingers)  # 3 chunks from the open stop
    assert all(m.ok for m in report.states[0].motions if not m.name.endswith("left_finger"))


def test_swapped_gr00t_action_parts_fail_where_the_arms_differ(aloha):
    parts = yaml.safe_load((policy_config_dir() / "gr00t_n15_aloha.yaml").read_text())["action"]
    report = check("gr00t_n15_aloha", aloha, action=parts[2:] + parts[:2])  # right arm first, action_space left first
    home, offsets = report.states
    assert home.passed  # at home both arms share one pose: the swap is invisible there
    assert not offsets.passed and not report.passed
    assert "the action decoding turns the hold-still value" in report.first_cause()


def test_a_clip_meant_for_normalised_actions_fails_on_joint_targets(aloha):
    report = check("openpi_pi0_aloha", aloha, actions={"clip": [-1.0, 1.0]})  # the elbow sits at 1.16 rad
    assert report.first_cause() == ("state home: action column 2 (left/follower_left/elbow): the action decoding "
                                    "turns the hold-still value 1.16 into 1 (part order, clip, scale or binarise "
                                    "of the config's actions)")
    elbow = next(m for m in report.states[0].motions if m.name == "follower_left/elbow")
    assert not elbow.ok and elbow.motion == pytest.approx(0.16, abs=1e-6)


def test_a_binarise_threshold_past_open_closes_the_gripper(widowx):
    report = check("octo_widowx", widowx, actions={"binarize": {6: 1.5}})
    gripper = next(m for m in report.states[0].motions if m.opening_motion is not None)
    assert not gripper.ok and gripper.opening_motion == pytest.approx(1.0)
    assert "action column 6 (arm/gripper): the action decoding turns the hold-still value 1 into 0" \
        in report.first_cause()


def test_a_binarised_gripper_settles_at_its_end_and_passes(widowx):
    """Between its end stops a binarised gripper goes to the end the observed opening rounds to: expected, not a
    mismatch (Bridge's client does it); it is judged at its end."""
    state = offset_state(widowx)  # gripper 30 % open
    report = check_contract(make_policy("octo_widowx", widowx), widowx, [("given", state)])
    gripper = next(m for m in report.states[0].motions if m.opening_motion is not None)
    assert report.passed and gripper.expected == pytest.approx(widowx.arms[0].gripper.closed)


def test_backends_without_their_own_decoding_say_so(franka):
    report = check_contract(make_policy("baseline", franka), franka, [("home", franka.home)])
    assert report.passed
    assert any("ColourTargetServo has no observation encoding or action decoding" in note for note in report.notes)
    assert any("arm arm gripper: the policy's state does not carry it" in note for note in report.notes)


@pytest.mark.parametrize("protocol", ["n1.5", "n1.6", "n1.6_sim_wrapper"])
def test_gr00t_identity_reply_and_state_reading_invert_the_wire_layout(aloha, protocol):
    """The self-test reads GR00T's state from the request as sent and answers in the reply format the client
    parses: both are exact inverses of the client's own request building and reply parsing, in every protocol."""
    config = yaml.safe_load((policy_config_dir() / "gr00t_n15_aloha.yaml").read_text())
    config["protocol"] = protocol
    policy = make_policy(config, aloha, source=policy_config_dir() / "gr00t_n15_aloha.yaml")
    layout = policy.layout
    states = {"left_arm": np.arange(6, dtype=np.float32), "left_gripper": np.array([0.5], dtype=np.float32),
              "right_arm": -np.arange(6, dtype=np.float32), "right_gripper": np.array([0.25], dtype=np.float32)}
    request = layout.request({"cam_high": np.zeros((4, 4, 3), np.uint8)}, states, "task")
    assert {key: list(value) for key, value in layout.states_in(request).items()} == \
        {key: list(value) for key, value in states.items()}
    parts = {part.key: np.full((16, part.width), float(i)) for i, part in enumerate(layout.actions)}
    expected = np.concatenate([parts[part.key] for part in layout.actions], axis=1)
    assert np.array_equal(layout.actions_from(layout.reply(parts), "gr00t"), expected)


# --- the command line ------------------------------------------------------------------------------------------------


def test_check_policy_from_a_given_state_writes_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["check-policy", "openvla_oft_aloha", "--robot", "aloha", "--state", "follower_left/left_finger=0.03",
            "follower_right/elbow=0.9", "--json", str(out)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "state given: 3 hold-still chunks" in text and "state home:" not in text
    assert "note: not checked: the server's model and its un-normalisation" in text
    report = json.loads(out.read_text())
    assert report["passed"] is True and report["states"][0]["label"] == "given"
    finger = next(m for m in report["states"][0]["motions"] if m["name"] == "follower_left/left_finger")
    assert finger["start"] == pytest.approx(0.03) and finger["motion"] < 1e-6


@pytest.mark.parametrize("args, message", [
    (["openpi_pi0_aloha", "--robot", "aloha", "--state", "waist=0.1"], r"--state: waist: not a joint of robot aloha"),
    (["openpi_pi0_aloha", "--robot", "aloha", "--state", "follower_left/waist=9"],
     r"--state: follower_left/waist: 9 is outside its limits"),
    (["openpi_pi0_aloha", "--robot", "aloha", "--checkpoint", "/tmp/x"], r"openpi_pi0_aloha\.yaml: backend: expected"),
    (["no_such_policy", "--robot", "aloha"], r"no_such_policy"),
])
def test_check_policy_user_errors_exit_2_with_one_line(capsys, args, message):
    assert cli.main(["check-policy", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


# --- policy_node start-up ----------------------------------------------------------------------------------------------


def test_policy_node_refuses_to_start_on_a_broken_contract_unless_told_to_skip(ros_context, aloha):
    from rclpy.parameter import Parameter

    from vla_ros.ros.policy_node import PolicyNode

    space = yaml.safe_load((policy_config_dir() / "openpi_pi0_aloha.yaml").read_text())["action_space"]
    space["gripper"] = {"open": 1.0, "closed": 0.0}
    policy = shipped_policy("openpi_pi0_aloha", aloha, action_space=space)
    wait = Parameter("contract_check_wait", value=0.0)
    with pytest.raises(ConfigError, match=r"^policy pi0_aloha: action contract: state home: follower_left/left_finger: "
                                          r"state side normalises over 0\.01844\.\.0\.058 m, action side maps over "
                                          r"0\.021\.\.0\.057 m: .*contract_check:=false skips this check\)$"):
        PolicyNode(robot=aloha, policy=policy, context=ros_context, parameter_overrides=[wait])
    node = PolicyNode(robot=aloha, policy=policy, context=ros_context,
                      parameter_overrides=[wait, Parameter("contract_check", value=False)])
    node.destroy_node()
    node = PolicyNode(robot=aloha, policy=shipped_policy("openpi_pi0_aloha", aloha), context=ros_context,
                      parameter_overrides=[wait])
    node.destroy_node()


def test_policy_node_checks_from_the_measured_state(ros_context, aloha):
    """Swapped GR00T parts hold still at home (both arms share one pose) but not where the arms differ: the node
    checks from the joint state it measures, not from home."""
    from rclpy.parameter import Parameter
    from ros_helpers import RobotIO

    from vla_ros.ros.policy_node import PolicyNode

    parts = yaml.safe_load((policy_config_dir() / "gr00t_n15_aloha.yaml").read_text())["action"]
    policy = shipped_policy("gr00t_n15_aloha", aloha, action=parts[2:] + parts[:2])
    io = RobotIO(ros_context, aloha, follow=False)
    io.q = offset_state(aloha)
    try:
        with pytest.raises(ConfigError, match=r"action contract: state measured: action column 0 "
                                              r"\(left/follower_left/waist\): the action decoding turns"):
            PolicyNode(robot=aloha, policy=policy, context=ros_context,
                       parameter_overrides=[Parameter("contract_check_wait", value=5.0)])
    finally:
        io.close()
