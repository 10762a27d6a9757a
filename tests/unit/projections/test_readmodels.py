"""Folding a batch of read-model row operations (`projections.readmodels.fold`): fewer
operations, the same rows — whatever the order inside a generation."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.readmodels import TABLES, Add, Operation, Update, Upsert, fold

Rows = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


def apply(rows: Rows, op: Operation) -> None:
    """What the SQL of `infrastructure.readmodels` does with one operation."""
    table = TABLES[op.table]
    existing = rows.setdefault(op.table, {})
    if isinstance(op, Update):
        key = tuple(op.key[k] for k in table.key)
        if key in existing:
            existing[key].update(op.values)
        return
    key = tuple(op.row[k] for k in table.key)
    if key not in existing:
        existing[key] = dict.fromkeys(table.columns) | dict(op.row)
    elif isinstance(op, Add):
        for column, value in op.row.items():
            if column in op.counters:
                existing[key][column] += value
            else:
                existing[key][column] = value
    else:
        existing[key].update(op.row)


def row_of(op: Operation) -> tuple[str, tuple[Any, ...]]:
    values = op.key if isinstance(op, Update) else op.row
    return op.table, tuple(values[k] for k in TABLES[op.table].key)


def one_by_one(operations: list[Operation]) -> Rows:
    rows: Rows = {}
    for op in operations:
        apply(rows, op)
    return rows


def folded(operations: list[Operation], shuffle: random.Random) -> Rows:
    rows: Rows = {}
    for generation in fold(operations):
        keys = [row_of(op) for op in generation]
        assert len(set(keys)) == len(keys)  # a row at most once per generation
        order = list(generation)
        shuffle.shuffle(order)  # a generation may be applied in any order
        for op in order:
            apply(rows, op)
    return rows


DELIVERIES = ["d1", "d2", "d3"]


def scheduled(delivery: str, n: int) -> Upsert:
    return Upsert(
        "deliveries",
        {"delivery_id": delivery, "status": "pending", "attempts": 0, "position": n},
    )


def attempted(delivery: str, n: int) -> Update:
    return Update("deliveries", {"delivery_id": delivery}, {"status": f"try{n}", "attempts": n})


def hourly(webhook: str, ok: bool) -> Add:
    return Add(
        "webhook_hourly",
        {
            "webhook_id": webhook,
            "hour": "2026-11-28T12",
            "succeeded": int(ok),
            "failed": int(not ok),
        },
        ("succeeded", "failed"),
    )


def stats(webhook: str, ms: float) -> Add:
    return Add(
        "webhook_stats",
        {"webhook_id": webhook, "attempts": 1, "succeeded": 1, "failed": 0, "total_ms": ms},
        ("attempts", "succeeded", "failed", "total_ms"),
    )


operation = st.one_of(
    st.builds(scheduled, st.sampled_from(DELIVERIES), st.integers(1, 9)),
    st.builds(attempted, st.sampled_from(DELIVERIES), st.integers(1, 9)),
    st.builds(hourly, st.sampled_from(["w1", "w2"]), st.booleans()),
    st.builds(stats, st.sampled_from(["w1", "w2"]), st.floats(0.1, 99.9)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=30), st.integers(0, 1000))
def test_folded_operations_leave_the_same_rows_as_one_by_one(
    operations: list[Operation], seed: int
) -> None:
    # Given any batch of inserts, updates and counter additions on a few rows
    # When it is folded and each generation applied in a random order
    # Then the rows are exactly those of applying the operations one by one
    assert folded(operations, random.Random(seed)) == one_by_one(operations)


def test_a_delivery_scheduled_and_attempted_in_one_batch_is_one_insert() -> None:
    # Given a delivery scheduled, then attempted twice, in one batch
    operations: list[Operation] = [scheduled("d1", 1), attempted("d1", 1), attempted("d1", 2)]
    # When folded
    generations = fold(operations)
    # Then one insert carries the last attempt's columns
    assert generations == [
        [
            Upsert(
                "deliveries",
                {"delivery_id": "d1", "status": "try2", "attempts": 2, "position": 1},
            )
        ]
    ]


def test_integer_counters_add_up_but_float_totals_stay_separate() -> None:
    # Given three successes of one webhook in the same hour, with their durations
    operations: list[Operation] = [hourly("w1", True) for _ in range(3)]
    operations += [stats("w1", 0.1), stats("w1", 0.2), stats("w1", 0.3)]
    # When folded
    generations = fold(operations)
    # Then the hourly counters become one addition of 3, while the float totals stay
    # three additions (summed here they could differ from the database's sum in the
    # last bits, and a rebuild's rows from the live ones)
    flat = [op for generation in generations for op in generation]
    hourly_ops = [op for op in flat if op.table == "webhook_hourly"]
    assert [op.row["succeeded"] for op in hourly_ops if isinstance(op, Add)] == [3]
    assert len([op for op in flat if op.table == "webhook_stats"]) == 3
    assert len(generations) == 3


def test_an_update_before_the_insert_stays_before_it() -> None:
    # Given an update of a row this batch has not inserted, then its insert
    operations: list[Operation] = [attempted("d1", 1), scheduled("d1", 1)]
    # When folded
    generations = fold(operations)
    # Then they are two generations, in their order (the update finds no row)
    assert generations == [[attempted("d1", 1)], [scheduled("d1", 1)]]
    assert folded(operations, random.Random(0)) == one_by_one(operations)
