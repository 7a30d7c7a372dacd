"""PolicyWorker: inference off the control thread; raising and hung policies never stall the control loop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import ActionPrefix, ChunkExecutor, ExecutorConfig
from vla_ros.core.policy_worker import PolicyWorker
from vla_ros.core.types import ActionChunk, ActionSpace, Observation, PolicyMetadata

SPACE = ActionSpace(kind="joint_pos", joints_per_arm=(2,), gripper=None)
DEADLINE = 10.0  # seconds a test may wait for a thread before failing instead of hanging


class ManualClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedPolicy:
    """Answers each call with the next behaviour: "ok", "raise", or an Event to block on until set."""

    def __init__(self, *behaviour, supports_prefix=False):
        self.metadata = PolicyMetadata("scripted", SPACE, horizon=5, rate_hz=50, supports_prefix=supports_prefix)
        self.behaviour = list(behaviour)
        self.calls: list[tuple[Observation, ActionPrefix | None]] = []

    def infer(self, observation: Observation, prefix: ActionPrefix | None = None) -> ActionChunk:
        self.calls.append((observation, prefix))
        step = self.behaviour.pop(0) if self.behaviour else "ok"
        if step == "raise":
            raise RuntimeError("CUDA out of memory\nwhile running the vision tower")
        if isinstance(step, threading.Event):
            step.wait(DEADLINE)
        return ActionChunk(np.full((5, 2), float(len(self.calls))), SPACE, 0.02, observation.stamp)


def observation(stamp: float) -> Observation:
    return Observation(images={}, joint_positions={}, instruction="pick", stamp=stamp)


def poll_until(worker: PolicyWorker, count: int = 1) -> list:
    results, give_up = [], time.monotonic() + DEADLINE
    while len(results) < count:
        assert time.monotonic() < give_up, "worker did not answer in time"
        results += worker.poll()
        time.sleep(0.001)
    return results


def test_inference_result_arrives_through_poll():
    clock = ManualClock()
    with PolicyWorker(ScriptedPolicy(), clock, inference_timeout=1.0) as worker:
        assert worker.request(observation(0.5))
        [result] = poll_until(worker)
    assert result.error is None and result.observation_stamp == 0.5
    assert result.chunk.actions[0].tolist() == [1.0, 1.0]
    assert worker.stats()["completed"] == 1 and not worker.busy


def test_a_request_in_flight_is_not_sent_again():
    gate = threading.Event()
    policy = ScriptedPolicy(gate)
    worker = PolicyWorker(policy, ManualClock(), inference_timeout=1.0)
    try:
        assert worker.request(observation(0.0))
        assert not worker.request(observation(0.02))
        assert worker.stats()["refused_busy"] == 1 and worker.busy
    finally:
        gate.set()
    poll_until(worker)
    assert len(policy.calls) == 1
    worker.close()


def test_prefix_is_passed_to_a_policy_that_supports_it_and_refused_otherwise():
    prefix = ActionPrefix(np.zeros((2, 2)), 0.02, 0.0)
    policy = ScriptedPolicy(supports_prefix=True)
    with PolicyWorker(policy, ManualClock(), inference_timeout=1.0) as worker:
        worker.request(observation(0.0), prefix)
        poll_until(worker)
    assert policy.calls[0][1] is prefix
    with PolicyWorker(ScriptedPolicy(), ManualClock(), inference_timeout=1.0) as worker:
        with pytest.raises(ValueError, match="prefix"):
            worker.request(observation(0.0), prefix)


def test_a_raising_policy_is_reported_and_the_executor_keeps_serving():
    clock = ManualClock()
    executor = ChunkExecutor(ExecutorConfig(mode="async"), ScriptedPolicy().metadata)
    with PolicyWorker(ScriptedPolicy("raise", "ok"), clock, inference_timeout=1.0) as worker:
        assert executor.tick(0.0).request
        worker.request(observation(0.0))
        [failed] = poll_until(worker)
        assert failed.chunk is None
        assert failed.error == ("policy scripted: infer raised RuntimeError: CUDA out of memory while running the "
                                "vision tower")
        executor.record_inference_error(failed.error)
        held = executor.tick(0.02)
        assert held.hold == "startup" and held.request  # still serving, asking again
        worker.request(observation(0.02))
        [ok] = poll_until(worker)
        assert executor.submit(ok.chunk, now=0.04)
        assert executor.tick(0.04).running
    stats = executor.stats()
    assert stats.inference_errors == 1 and stats.last_inference_error == failed.error
    assert worker.stats()["errors"] == 1 and worker.stats()["completed"] == 1


def test_a_hung_policy_never_delays_the_control_loop_and_times_out():
    clock = ManualClock()
    gate = threading.Event()
    policy = ScriptedPolicy(gate, "ok")
    executor = ChunkExecutor(ExecutorConfig(mode="async"), policy.metadata)
    worker = PolicyWorker(policy, clock, inference_timeout=0.5)
    try:
        started = time.monotonic()
        assert worker.request(observation(0.0))
        # the first call is inside infer, stuck, before the control loop goes on: else on a busy machine the fresh
        # thread started below could be the first to call infer and take the blocking behaviour
        while not policy.calls:
            assert time.monotonic() - started < DEADLINE
            time.sleep(0.001)
        ticks = []
        for n in range(25):  # 0.48 s of control while the policy is stuck
            clock.now = n * 0.02
            assert worker.poll() == []
            ticks.append(executor.tick(clock.now))
        assert time.monotonic() - started < 0.5 * DEADLINE  # the loop ran without waiting for the policy
        assert all(t.hold == "startup" for t in ticks)
        clock.now = 0.52
        [timed_out] = worker.poll()
        assert "no answer within inference_timeout 0.5 s" in timed_out.error
        assert not worker.busy and worker.stats()["hung_threads"] == 1
        assert worker.request(observation(0.52))  # a fresh thread serves the next request
        [ok] = poll_until(worker)
        assert ok.error is None and ok.observation_stamp == 0.52
    finally:
        gate.set()
    give_up = time.monotonic() + DEADLINE
    while worker.stats()["late_discarded"] == 0:  # the stuck call finally returns: its answer is dropped
        assert time.monotonic() < give_up
        assert worker.poll() == []
        time.sleep(0.001)
    assert worker.stats()["timeouts"] == 1
    worker.close()


def test_no_more_threads_are_started_while_abandoned_calls_are_still_stuck():
    clock = ManualClock()
    gates = [threading.Event(), threading.Event()]
    worker = PolicyWorker(ScriptedPolicy(*gates), clock, inference_timeout=0.1, max_hung=2)
    try:
        for gate in gates:
            assert worker.request(observation(clock.now))
            clock.now += 0.2
            assert "abandoned" in worker.poll()[0].error
        assert not worker.request(observation(clock.now))
        assert worker.stats()["refused_hung"] == 1 and "2 abandoned" in worker.stats()["last_error"]
    finally:
        for gate in gates:
            gate.set()


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), "1"])
def test_inference_timeout_must_be_positive(timeout):
    with pytest.raises(ConfigError, match="inference_timeout"):
        PolicyWorker(ScriptedPolicy(), ManualClock(), inference_timeout=timeout)
