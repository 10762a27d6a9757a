"""The cross-check of the stores against the receiver."""

from __future__ import annotations

from typing import Any

from bench.verify import DeliveryRecord, check


def _delivery(i: str, webhook: str = "w", statuses: tuple[int, ...] = (204,)) -> DeliveryRecord:
    record = DeliveryRecord(i, webhook, "s", f"evt_{i}", 0.0)
    record.attempts = [
        {"number": n + 1, "status_code": code, "recorded_at": 1.0}
        for n, code in enumerate(statuses)
    ]
    return record


def _arrival(delivery_id: str, attempt: int = 1) -> list[Any]:
    return [1.0, "/hooks/x", "", "evt", delivery_id, str(attempt)]


def test_every_delivery_attempted_and_every_post_recorded_is_ok() -> None:
    deliveries = {i: _delivery(i) for i in ("a", "b")}
    result = check(deliveries, [_arrival("a"), _arrival("b")], expected=2)
    assert result["ok"]
    assert result["attempts_recorded"] == 2
    assert result["receiver_duplicates"] == 0


def test_a_missing_delivery_or_an_unrecorded_post_fails() -> None:
    deliveries = {"a": _delivery("a"), "b": _delivery("b", statuses=())}
    result = check(deliveries, [_arrival("a"), _arrival("b")], expected=2)
    assert not result["ok"]
    assert result["healthy_not_succeeded"] == 1
    assert result["posts_not_recorded"] == 1
    assert not check({"a": _delivery("a")}, [_arrival("a")], expected=2)["ok"]


def test_a_duplicate_post_of_a_recorded_attempt_is_counted_not_failed() -> None:
    deliveries = {"a": _delivery("a")}
    result = check(deliveries, [_arrival("a"), _arrival("a")], expected=1)
    assert result["ok"]
    assert result["receiver_duplicates"] == 1


def test_a_failing_webhook_may_hold_deliveries_without_attempts() -> None:
    deliveries = {
        "ok": _delivery("ok", webhook="good"),
        "f1": _delivery("f1", webhook="bad", statuses=(500,)),
        "f2": _delivery("f2", webhook="bad", statuses=()),
    }
    arrivals = [_arrival("ok"), _arrival("f1")]
    result = check(deliveries, arrivals, expected=3, healthy_webhooks={"good"})
    assert result["ok"]
    assert result["held_without_attempt"] == 1
