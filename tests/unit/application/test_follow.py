"""The one follower mechanism (`application.follow`) against an in-memory event store and
view: batches, lanes, exactly-once under a second writer, and poison events isolated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError

from application.follow import Batch, Follower, partition_lane


class Note(Aggregate):
    @event("Written")
    def __init__(self, text: str, shelf: int) -> None:
        self.text = text
        self.shelf = shelf


class Notes(Application[UUID]):
    name = "notes"


@dataclass
class Shelf:
    """A view that keeps notes' texts and its lanes' positions, applied atomically: a
    batch is checked completely before anything of it is kept."""

    refuse: set[str] = field(default_factory=set)  # texts it cannot hold (poison)
    down: bool = False  # the view's database is away
    texts: list[tuple[str, str]] = field(default_factory=list)  # (lane, text)
    tracking: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    applies: int = 0

    def position(self, lane: str) -> int:
        return self.tracking.get(lane, 0)

    def apply(self, batch: Batch) -> None:
        self.applies += 1
        if self.down:
            raise ConnectionError("the view's database is away")
        self._check(batch)
        bad = [i.event.text for i in batch.items if i.event.text in self.refuse]
        if bad:
            raise ValueError(f"cannot hold {bad[0]!r}")
        for item in batch.items:
            self.texts.extend((lane, item.event.text) for lane in item.lanes)
        self._track(batch)

    def skip(self, batch: Batch, error: Exception) -> None:
        self._check(batch)
        [item] = batch.items
        self.skipped.append((item.notification.id, type(error).__name__))
        self._track(batch)

    def _check(self, batch: Batch) -> None:
        # Compare and set: each lane must be where the follower found it.
        for t in batch.trackings:
            name = t.application_name
            if self.tracking.get(name, 0) != batch.starts.get(name, 0):
                raise IntegrityError(f"{name} moved meanwhile")

    def _track(self, batch: Batch) -> None:
        for t in batch.trackings:
            self.tracking[t.application_name] = t.notification_id


def write(app: Notes, *texts: str, shelf: int = 0) -> None:
    app.save(*(Note(text, shelf) for text in texts))


def transient(error: BaseException) -> bool:
    return isinstance(error, ConnectionError)


@pytest.fixture
def notes() -> Notes:
    return Notes()


def test_a_follower_applies_every_event_once_in_batches(notes: Notes) -> None:
    # Given seven notes, and a follower reading three at a time
    write(notes, *"abcdefg")
    shelf = Shelf()
    follower = Follower("shelf", notes, shelf, batch_size=3)

    # When it pulls until there is nothing new
    covered = []
    while done := follower.pull():
        covered.append(done)

    # Then it applied each note once, in log order, in three batches
    assert covered == [3, 3, 1]
    assert [text for _, text in shelf.texts] == list("abcdefg")
    assert shelf.tracking == {"notes": 7}

    # When two more are written
    write(notes, "h", "i")

    # Then only those are applied
    assert follower.pull() == 2
    assert [text for _, text in shelf.texts][-2:] == ["h", "i"]


def test_a_restarted_follower_resumes_from_its_tracking_record(notes: Notes) -> None:
    # Given a follower that applied three notes, and three more written
    write(notes, "a", "b", "c")
    shelf = Shelf()
    Follower("shelf", notes, shelf).pull()
    write(notes, "d", "e", "f")

    # When a new follower (another process, a restart) pulls into the same view
    assert Follower("shelf", notes, shelf).pull() == 3

    # Then the view holds each note once
    assert [text for _, text in shelf.texts] == list("abcdef")


def test_a_batch_another_process_applied_first_is_not_applied_again(notes: Notes) -> None:
    # Given two followers on one view, the first remembering its position
    write(notes, "a")
    shelf = Shelf()
    first, second = Follower("one", notes, shelf), Follower("two", notes, shelf)
    first.pull()

    # When the second applies the next notes before the first looks again
    write(notes, "b", "c")
    assert second.pull() == 2

    # Then the first is refused, applies nothing, and carries on from the new position
    assert first.pull() == 0
    write(notes, "d")
    assert first.pull() == 1
    assert [text for _, text in shelf.texts] == list("abcd")
    assert shelf.skipped == []


def test_an_event_the_view_cannot_hold_is_skipped_and_the_rest_applied(notes: Notes) -> None:
    # Given ten notes, the seventh of which the view refuses (a poison event)
    write(notes, *"abcdef", "POISON", "h", "i", "j")
    shelf = Shelf(refuse={"POISON"})
    told: list[tuple[str, int]] = []
    follower = Follower(
        "shelf",
        notes,
        shelf,
        transient=transient,
        on_poison=lambda name, item, error: told.append((name, item.notification.id)),
    )

    # When it pulls
    assert follower.pull() == 10

    # Then every other note is applied, in order, the poison one is recorded as
    # skipped, and the follower was told; the position is past all of them
    assert [text for _, text in shelf.texts] == list("abcdefhij")
    assert shelf.skipped == [(7, "ValueError")]
    assert told == [("shelf", 7)]
    assert shelf.tracking == {"notes": 10}
    # And the next notes flow as usual
    write(notes, "k")
    assert follower.pull() == 1
    assert shelf.texts[-1] == ("notes", "k")


def test_a_failure_of_the_moment_is_raised_and_nothing_is_skipped(notes: Notes) -> None:
    # Given notes and a view whose database is away
    write(notes, "a", "b")
    shelf = Shelf(down=True)
    follower = Follower("shelf", notes, shelf, transient=transient)

    # When it pulls, the failure is raised (for the runner to retry), nothing skipped
    with pytest.raises(ConnectionError):
        follower.pull()
    assert shelf.skipped == []
    assert shelf.applies == 1

    # When the database is back, the same batch is applied
    shelf.down = False
    assert follower.pull() == 2
    assert [text for _, text in shelf.texts] == ["a", "b"]


def test_lanes_apply_an_item_where_they_are_behind_it(notes: Notes) -> None:
    # Given a view with two lanes, one already past the first two notes (a model rebuilt
    # aside and swapped in while the other kept going)
    write(notes, "a", "b", "c")
    shelf = Shelf(tracking={"old": 0, "new": 2})
    follower = Follower("shelf", notes, shelf, lanes=["old", "new"])

    # When the follower pulls
    follower.pull()

    # Then the old lane got all three and the new lane only the third
    assert shelf.texts == [("old", "a"), ("old", "b"), ("old", "c"), ("new", "c")]
    assert shelf.tracking == {"old": 3, "new": 3}


def test_a_partitioned_follower_applies_only_its_partitions(notes: Notes) -> None:
    # Given notes on shelves 0, 1 and 2, and a follower owning partitions 0 and 2
    for n in range(6):
        write(notes, f"n{n}", shelf=n % 3)
    shelf_of = {}
    for n in notes.recorder.select_notifications(start=None, limit=100):
        shelf_of[n.id] = notes.mapper.to_domain_event(n).shelf

    def lanes_of(notification: Any) -> list[str]:
        partition = shelf_of[notification.id]
        lane = partition_lane("notes", partition)
        return [lane] if partition in (0, 2) else []

    shelf = Shelf()
    lanes = [partition_lane("notes", 0), partition_lane("notes", 2)]
    follower = Follower("fan-out", notes, shelf, lanes=lanes, lanes_of=lanes_of)

    # When it pulls
    follower.pull()

    # Then it applied the notes of its partitions only, and moved both lanes
    assert sorted(text for _, text in shelf.texts) == ["n0", "n2", "n3", "n5"]
    assert shelf.tracking == {"notes#000": 6, "notes#002": 6}
    # And a follower of partition 1 (another dispatcher) applies the rest
    other = Follower(
        "fan-out",
        notes,
        shelf,
        lanes=[partition_lane("notes", 1)],
        lanes_of=lambda n: [partition_lane("notes", 1)] if shelf_of[n.id] == 1 else [],
    )
    other.pull()
    assert sorted(text for _, text in shelf.texts) == ["n0", "n1", "n2", "n3", "n4", "n5"]


def test_a_lane_without_events_keeps_its_stored_position_between_checkpoints(
    notes: Notes,
) -> None:
    # Given a follower of two partitions whose checkpoint is far away, after its first
    # batch (which writes every lane)
    write(notes, "a", shelf=0)
    shelf = Shelf()
    now = [0.0]
    lanes = [partition_lane("notes", 0), partition_lane("notes", 1)]
    follower = Follower(
        "fan-out",
        notes,
        shelf,
        lanes=lanes,
        lanes_of=lambda n: [partition_lane("notes", notes.mapper.to_domain_event(n).shelf)],
        checkpoint_seconds=10,
        clock=lambda: now[0],
    )
    follower.pull()
    assert shelf.tracking == {"notes#000": 1, "notes#001": 1}

    # When notes of partition 0 only are applied
    write(notes, "b", "c", shelf=0)
    follower.pull()

    # Then only that lane's record moved; the follower itself knows both are at 3
    assert shelf.tracking == {"notes#000": 3, "notes#001": 1}
    assert follower.positions() == {"notes#000": 3, "notes#001": 3}

    # When the checkpoint time comes
    now[0] = 11
    write(notes, "d", shelf=0)
    follower.pull()

    # Then every lane is written
    assert shelf.tracking == {"notes#000": 4, "notes#001": 4}
