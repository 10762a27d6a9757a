"""Hostile input never stops the read side (issue #12, item 1).

A receiver may answer anything: a gzip body, a binary one, one holding a 0x00 byte (which
PostgreSQL `text` cannot hold). The attempt is recorded with the exact bytes, as base64
and marked so, and the read models — events, deliveries, audit — keep following on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import gzip
from typing import Any

import pytest

from domain.values import Actor
from infrastructure.queries import Queries
from infrastructure.readmodels import StalePosition
from tests.e2e.conftest import Pipeline, wait_until
from tests.support.receiver import Reply

ANN = Actor.person("ann@shop.example")


def caught_up(pipeline: Pipeline) -> None:
    """Bring every read model up to date (what the projector thread does)."""
    while True:
        try:
            if not pipeline.services.read_models.catch_up_all():
                return
        except StalePosition:
            continue


@pytest.mark.parametrize(
    "answer",
    [b"\x00", b"ok\x00binary\xff\xfe", gzip.compress(b'{"received": true}')],
    ids=["nul", "binary", "gzip"],
)
def test_an_answer_of_any_bytes_is_recorded_and_read_back_exactly(
    pipeline: Pipeline, answer: bytes
) -> None:
    # Given a receiver answering bytes that are no storable text
    webhook = pipeline.webhook(["customer.registered"])
    pipeline.receiver.behaviour = Reply(status=200, body=answer)

    # When an event is delivered to it
    pipeline.services.commerce.register_customer(pipeline.store_id, "c@x.example", "C", None, ANN)
    delivery = wait_until(lambda: _succeeded(pipeline, webhook["id"]))

    # Then the attempt holds the exact bytes, as base64, and says so
    attempt = delivery.attempts[0]
    assert attempt.response_body_encoding == "base64"
    assert base64.b64decode(attempt.response_body) == answer
    # And the read models take it in: the delivery, its attempt and the event are listed
    caught_up(pipeline)
    queries = Queries(pipeline.services.read_models)
    shown = queries.get_delivery(pipeline.store_id, delivery.id)
    assert shown["attempts"][0]["responseBodyEncoding"] == "base64"
    assert base64.b64decode(shown["attempts"][0]["responseBody"]) == answer
    assert queries.list_events(pipeline.store_id)["data"]


def _succeeded(pipeline: Pipeline, webhook_id: str) -> Any:
    deliveries = pipeline.deliveries_of(webhook_id)
    return deliveries[0] if deliveries and deliveries[0].status == "succeeded" else None
