"""StateRateCheck: a joint-state rate that leaves the watchdog less than half of joint_state_hold_after for a late
message is reported once per topic, with what to change; a fast enough rate, or too few messages, is not."""

from vla_ros.core.safety.state_rate import StateRateCheck


def _feed(check, topic, rate_hz, count, start=10.0):
    return [w for k in range(count) if (w := check.observe(topic, start + k / rate_hz))]


def test_30_hz_against_50_ms_is_reported_once_with_the_fix():
    check = StateRateCheck(0.05, samples=20)
    [warning] = _feed(check, "/joint_states", 30.0, 100)
    assert warning == ("/joint_states: joint states arrive every 33 ms (30 Hz), so watchdog.joint_state_hold_after "
                       "0.05 s leaves 17 ms for a late message before targets are refused and the arm holds: publish "
                       "them at >= 40 Hz or raise joint_state_hold_after in the safety config")


def test_fast_enough_rates_and_short_runs_are_not_reported():
    check = StateRateCheck(0.05, samples=20)
    assert _feed(check, "/follower_left/joint_states", 100.0, 100) == []
    assert _feed(check, "/ur/joint_states", 50.0, 100) == []  # 20 ms period: 30 ms of slack
    assert _feed(check, "/slow/joint_states", 10.0, 19) == []  # not enough messages to judge yet
    assert set(check.periods) == {"/follower_left/joint_states", "/ur/joint_states"}


def test_a_rate_slower_than_the_hold_threshold_reports_no_slack_and_repeated_stamps_are_ignored():
    check = StateRateCheck(0.05, samples=5)
    warnings = [check.observe("/js", t) for t in (0.0, 0.0, 0.1, 0.2, 0.2, 0.3, 0.4, 0.5)]
    assert [w for w in warnings if w] == [warnings[-1]] and "every 100 ms (10 Hz)" in warnings[-1]
    assert "leaves 0 ms" in warnings[-1]
