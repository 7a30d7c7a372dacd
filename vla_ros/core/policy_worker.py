"""Runs a policy's inference off the control thread, so a slow or hung policy never delays a control tick.

One request at a time (a policy is a single server): `request` never blocks and refuses while one is in flight;
`poll` hands back finished results through a thread-safe queue. A request that outlives `inference_timeout` is
declared failed and abandoned, its thread left to finish (or not) on its own, and a fresh thread serves the next
request; whatever the abandoned call returns later is discarded. Time comes from the injected `clock`.
`request` and `poll` are meant to be called from one thread (the control loop).
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from typing import Callable

from vla_ros.core.errors import ConfigError
from vla_ros.core.executor import ActionPrefix
from vla_ros.core.types import ActionChunk, Observation, Policy


@dataclass(frozen=True)
class InferenceResult:
    """A finished request: `chunk` on success, else a one-line `error` (the policy raised or timed out)."""

    request_id: int
    observation_stamp: float
    requested_at: float
    finished_at: float
    chunk: ActionChunk | None = None
    error: str | None = None

    @property
    def inference_time(self) -> float:
        return self.finished_at - self.requested_at


@dataclass(frozen=True)
class _Request:
    request_id: int
    observation: Observation
    prefix: ActionPrefix | None
    requested_at: float


def _serve(policy: Policy, inbox: queue.SimpleQueue, results: queue.SimpleQueue, clock: Callable[[], float]) -> None:
    """Thread body: answer requests from `inbox` until a None arrives."""
    name = policy.metadata.name
    while (req := inbox.get()) is not None:
        stamp = req.observation.stamp
        try:
            if req.prefix is None:
                chunk = policy.infer(req.observation)
            else:
                chunk = policy.infer(req.observation, prefix=req.prefix)
        except Exception as exc:  # any backend failure is reported, never allowed to kill the worker
            detail = " ".join(str(exc).split()) or "(no message)"
            results.put(InferenceResult(req.request_id, stamp, req.requested_at, clock(),
                                        error=f"policy {name}: infer raised {type(exc).__name__}: {detail}"))
        else:
            results.put(InferenceResult(req.request_id, stamp, req.requested_at, clock(), chunk=chunk))


class PolicyWorker:
    """Background inference for one policy. See the module docstring."""

    def __init__(self, policy: Policy, clock: Callable[[], float], inference_timeout: float = 2.0, max_hung: int = 2):
        if not (isinstance(inference_timeout, (int, float)) and not isinstance(inference_timeout, bool)
                and math.isfinite(inference_timeout) and inference_timeout > 0):
            raise ConfigError("policy worker", "inference_timeout",
                              f"expected a positive number of seconds, got {inference_timeout!r}")
        self.policy, self.clock = policy, clock
        self.inference_timeout, self.max_hung = float(inference_timeout), max_hung
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._inbox: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None
        self._hung: list[threading.Thread] = []
        self._in_flight: _Request | None = None
        self._next_id = 0
        self._counts = dict(requests=0, refused_busy=0, refused_hung=0, completed=0, errors=0, timeouts=0,
                            late_discarded=0)
        self._last_error: str | None = None
        self._last_inference_time: float | None = None
        self._max_inference_time: float | None = None

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def request(self, observation: Observation, prefix: ActionPrefix | None = None) -> bool:
        """Start inference on `observation` (with a committed `prefix` if the policy supports one); never blocks.

        False when not sent: a request is already in flight, or `max_hung` abandoned calls are still running.
        """
        if prefix is not None and not self.policy.metadata.supports_prefix:
            raise ValueError(f"policy {self.policy.metadata.name} does not support an action prefix")
        if self._in_flight is not None:
            self._counts["refused_busy"] += 1
            return False
        self._hung = [t for t in self._hung if t.is_alive()]
        if len(self._hung) >= self.max_hung:
            self._counts["refused_hung"] += 1
            self._last_error = (f"policy {self.policy.metadata.name}: {len(self._hung)} abandoned inferences are "
                                f"still running; not starting another")
            return False
        if self._thread is None:
            self._inbox = queue.SimpleQueue()
            self._thread = threading.Thread(target=_serve, args=(self.policy, self._inbox, self._results, self.clock),
                                            name=f"policy-{self.policy.metadata.name}", daemon=True)
            self._thread.start()
        self._in_flight = _Request(self._next_id, observation, prefix, self.clock())
        self._next_id += 1
        self._counts["requests"] += 1
        self._inbox.put(self._in_flight)
        return True

    def poll(self) -> list[InferenceResult]:
        """Results finished since the last poll, plus a failure for a request past `inference_timeout`."""
        finished = []
        while True:
            try:
                result = self._results.get_nowait()
            except queue.Empty:
                break
            if self._in_flight is None or result.request_id != self._in_flight.request_id:
                self._counts["late_discarded"] += 1  # the answer to an abandoned request
                continue
            self._in_flight = None
            finished.append(result)
            if result.error is None:
                self._counts["completed"] += 1
                self._last_inference_time = result.inference_time
                self._max_inference_time = max(self._max_inference_time or 0.0, result.inference_time)
            else:
                self._counts["errors"] += 1
                self._last_error = result.error
        req = self._in_flight
        now = self.clock()
        if req is not None and now - req.requested_at > self.inference_timeout:
            error = (f"policy {self.policy.metadata.name}: no answer within inference_timeout "
                     f"{self.inference_timeout:g} s; request abandoned")
            finished.append(InferenceResult(req.request_id, req.observation.stamp, req.requested_at, now, error=error))
            self._counts["timeouts"] += 1
            self._last_error = error
            self._abandon_thread()
            self._in_flight = None
        return finished

    def _abandon_thread(self) -> None:
        """Leave the current thread to its hung call (it exits once that returns); the next request gets a new one."""
        self._inbox.put(None)
        self._hung.append(self._thread)
        self._thread = self._inbox = None

    def close(self) -> None:
        """Stop the serving thread once its current call returns; never waits for a hung policy."""
        if self._thread is not None:
            self._inbox.put(None)
            self._thread = self._inbox = None
        self._in_flight = None

    def __enter__(self) -> "PolicyWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        return dict(self._counts, busy=self.busy, hung_threads=sum(t.is_alive() for t in self._hung),
                    last_error=self._last_error, last_inference_time=self._last_inference_time,
                    max_inference_time=self._max_inference_time)
