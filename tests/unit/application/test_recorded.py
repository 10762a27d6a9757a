"""In-process wake-ups (`application.recorded`): an application built with the mixin
calls its callbacks after each save, until they are cancelled."""

from __future__ import annotations

from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from application.recorded import NotifiesOnRecord


class Noted(Aggregate):
    pass


class Notebook(NotifiesOnRecord, Application[UUID]):
    pass


def test_every_save_calls_the_callbacks_until_cancelled() -> None:
    # Given an application with two callbacks
    app = Notebook(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    first: list[int] = []
    second: list[int] = []
    cancel_first = app.on_recorded(lambda: first.append(1))
    app.on_recorded(lambda: second.append(1))
    # When it saves twice, with the first callback cancelled in between
    app.save(Noted())
    cancel_first()
    app.save(Noted())
    # Then the first was called once, the second twice
    assert (len(first), len(second)) == (1, 2)


def test_a_failed_save_calls_nothing() -> None:
    # Given an application with a callback, and an aggregate already saved
    app = Notebook(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    calls: list[int] = []
    app.on_recorded(lambda: calls.append(1))
    aggregate = Noted()
    app.save(aggregate)
    stale = app.repository.get(aggregate.id)
    aggregate.trigger_event(Aggregate.Event)
    app.save(aggregate)
    calls.clear()
    # When a conflicting save of the same version fails
    stale.trigger_event(Aggregate.Event)
    with pytest.raises(IntegrityError):
        app.save(stale)
    # Then no callback ran
    assert calls == []
