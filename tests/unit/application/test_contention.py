"""Commands that lose a race to save run again; in one process they take turns (ADR 0026)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from application.contention import FIRST_PAUSE, LONGEST_PAUSE, Contention
from application.errors import ConcurrentChange, Conflict
from domain.errors import InsufficientStock


class Recorder:
    """Pauses and counters, instead of sleeping."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.retries = 0
        self.exhausted = 0

    def contention(self, attempts: int = 5, random: float = 1.0) -> Contention:
        def retried() -> None:
            self.retries += 1

        def exhausted() -> None:
            self.exhausted += 1

        return Contention(
            attempts=attempts,
            on_retry=retried,
            on_exhausted=exhausted,
            pause=self.pauses.append,
            random=lambda: random,
        )


def losing(times: int) -> tuple[list[int], Callable[[], int]]:
    """An attempt that loses the race ``times`` times, then answers how often it ran."""
    runs: list[int] = []

    def attempt() -> int:
        runs.append(1)
        if len(runs) <= times:
            raise IntegrityError("another writer saved first")
        return len(runs)

    return runs, attempt


def test_a_command_that_lost_a_race_runs_again_until_it_wins() -> None:
    # Given a command that loses the race to save twice
    recorder = Recorder()
    runs, attempt = losing(2)

    # When it runs
    answer = recorder.contention().run([uuid4()], attempt, "customer 1")

    # Then it ran three times and answers the third run's result, after two pauses
    # growing from the first one (here at their longest: random() == 1)
    assert answer == len(runs) == 3
    assert recorder.pauses == [FIRST_PAUSE, FIRST_PAUSE * 2]
    assert (recorder.retries, recorder.exhausted) == (2, 0)


def test_pauses_are_random_and_bounded() -> None:
    # Given a command that always loses, with jitter at a quarter
    recorder = Recorder()
    _, attempt = losing(1000)

    # When it runs out of attempts
    with pytest.raises(ConcurrentChange):
        recorder.contention(attempts=20, random=0.25).run([uuid4()], attempt, "sku 1")

    # Then each pause is the jitter's share of a doubling bound, never over the longest
    assert len(recorder.pauses) == 19
    assert recorder.pauses[:3] == [0.25 * FIRST_PAUSE, 0.5 * FIRST_PAUSE, 1.0 * FIRST_PAUSE]
    assert max(recorder.pauses) == 0.25 * LONGEST_PAUSE


def test_a_command_that_always_loses_is_a_counted_conflict() -> None:
    # Given a command that loses every race
    recorder = Recorder()
    runs, attempt = losing(1000)

    # When it has used its attempts
    with pytest.raises(
        ConcurrentChange, match="customer 1 is being changed concurrently"
    ) as raised:
        recorder.contention(attempts=5).run([uuid4()], attempt, "customer 1")

    # Then it ran 5 times, and the conflict is a 409-kind error, counted once
    assert len(runs) == 5
    assert isinstance(raised.value, Conflict)
    assert (recorder.retries, recorder.exhausted) == (4, 1)


def test_a_rule_s_refusal_is_not_run_again() -> None:
    # Given a command whose rule refuses it
    recorder = Recorder()
    runs: list[int] = []

    def attempt() -> None:
        runs.append(1)
        raise InsufficientStock("SKU MUG has 0 in stock")

    # When it runs
    # Then the refusal is the answer at once
    with pytest.raises(InsufficientStock):
        recorder.contention().run([uuid4()], attempt, "sku 1")
    assert len(runs) == 1
    assert recorder.pauses == []


def test_commands_writing_one_aggregate_take_turns() -> None:
    # Given 8 threads each running 20 commands on one aggregate
    contention = Contention()
    aggregate = uuid4()
    inside = 0
    most = 0
    lock = threading.Lock()

    def attempt() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        threading.Event().wait(0.0005)
        with lock:
            inside -= 1

    def client() -> None:
        for _ in range(20):
            contention.run([aggregate, uuid4()], attempt, "it")

    # When they all run at once
    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(client) for _ in range(8)]:
            future.result()

    # Then never two of them were inside at the same time
    assert most == 1


def test_commands_on_different_aggregates_run_side_by_side() -> None:
    # Given two commands on two aggregates, each waiting inside for the other
    contention = Contention()
    both_inside = threading.Barrier(2, timeout=5)

    def attempt() -> None:
        both_inside.wait()  # broken (an error) if the other cannot get in

    # When they run at once
    # Then both get in together and finish
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(contention.run, [uuid4()], attempt, "it") for _ in range(2)]
        for future in futures:
            future.result()
