"""The composition root: builds every application and adapter from `Settings`, once.

Nothing else in the code reads configuration or opens connections on its own; tests build
the same graph with their own `Settings` (a temporary data dir, a private PostgreSQL
schema) and so exercise exactly what production runs.

`build` makes the applications every process needs; `start_dispatcher` and
`start_worker` add the background parts of the dispatcher and worker roles. Embedded mode
(`webround serve`) starts both in one process on an in-process broker.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from eventsourcing.application import Application
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment

from application import views
from application.commerce import Commerce
from application.contention import Contention
from application.directory import WebhookDirectory
from application.dispatch import Dispatch
from application.policies import WebhookPolicies
from application.recorded import NotifiesOnRecord
from application.webhooks import Webhooks
from domain.delivery import CircuitPolicy, RetryPolicy
from infrastructure.broker import Queue, declare_deliver_actor, enqueue_many, make_broker
from infrastructure.dispatcher import Dispatcher
from infrastructure.followers import Pulled, Runner, Signals, prepare
from infrastructure.history import event_history
from infrastructure.idempotency import (
    KeyedPostgresRecorder,
    KeyedSQLiteRecorder,
    KeyLedger,
    KeyTable,
)
from infrastructure.leader import Leadership, dispatcher_lock
from infrastructure.leases import Leases, Owner, SoleOwner
from infrastructure.metrics import (
    COMMAND_CONFLICTS,
    COMMAND_RETRIES,
    DISPATCHER_ACTIVE,
    PARTITIONS_OWNED,
    ServiceGauges,
    count_skipped,
)
from infrastructure.persistence import application_env, ensure_schema, schema_lock
from infrastructure.readmodels import (
    EntityViews,
    ReadModelStore,
    store_lookup,
)
from infrastructure.schedule import Schedule, migrate_legacy_schedule
from infrastructure.secrets import MasterKey, SealingKeeper, SecretBox
from infrastructure.sender import Sender
from infrastructure.settings import Settings
from infrastructure.ssrf import TargetGuard
from infrastructure.wakeup import CommitListener
from infrastructure.worker import USER_AGENT, AttemptRecorder, DeliveryWorker
from projections.envelopes import build_envelope
from projections.readmodels import Context

log = logging.getLogger("webround")

# The name the read models' database objects go by (``readmodels_tracking``, readmodels.sqlite).
READ_MODELS_NAME = "readmodels"

VERSION = "0.1.0"


@dataclass
class Services:
    settings: Settings
    commerce: Commerce
    webhooks: Webhooks
    dispatch: Dispatch
    keeper: SealingKeeper
    guard: TargetGuard
    idempotency: KeyLedger
    read_models: ReadModelStore
    _closers: list[Callable[[], None]] = field(default_factory=list)
    # Set when the process begins to stop: requests that wait (the events feed's long
    # poll) answer at once instead of holding up a graceful shutdown.
    stopping: threading.Event = field(default_factory=threading.Event)
    _schedule: Schedule | None = None
    _schedule_lock: threading.Lock = field(default_factory=threading.Lock)

    def schedule(self) -> Schedule:
        """The delivery schedule's tables (in the dispatch store's database: the API
        reads circuit state and gauges from them)."""
        with self._schedule_lock:
            if self._schedule is None:
                self._schedule = open_schedule(self)
            return self._schedule

    def close(self) -> None:
        """Stop background parts (newest first), then close the stores."""
        self.stopping.set()
        while self._closers:
            self._closers.pop()()
        self.dispatch.close()
        self.webhooks.close()
        self.commerce.close()


def build(
    settings: Settings,
    clock: Callable[[], datetime] | None = None,
    jitter: Callable[[], float] | None = None,
) -> Services:
    with schema_lock(settings.database_url):
        return _build(settings, clock, jitter)


def _build(
    settings: Settings,
    clock: Callable[[], datetime] | None,
    jitter: Callable[[], float] | None,
) -> Services:
    if settings.database_url is not None:
        ensure_schema(settings.database_url)
    master_key = MasterKey.load(
        key=settings.master_key, key_file=settings.master_key_file, data_dir=settings.data_dir
    )
    keeper = SealingKeeper(SecretBox(master_key))
    guard = TargetGuard(allowed_networks=settings.allowed_targets)
    commerce = Commerce(
        env=application_env(settings, Commerce.name),
        clock=clock,
        contention=counted_contention(Commerce.name),
    )
    webhooks = Webhooks(
        env=application_env(settings, Webhooks.name),
        targets=guard,
        keeper=keeper,
        clock=clock,
        contention=counted_contention(Webhooks.name),
        max_webhooks=settings.max_webhooks_per_store,
    )
    dispatch = Dispatch(
        env=application_env(settings, Dispatch.name),
        commerce=commerce,
        directory=WebhookDirectory(webhooks),
        history=event_history,
        build_envelope=build_envelope,
        policy=RetryPolicy(settings.retry_schedule),
        circuit=circuit_policy(settings),
        partitions=settings.partitions,
        clock=clock,
        random=jitter or random.random,
    )
    migrate_legacy_schedule(dispatch, settings.data_dir)
    sources: dict[str, Any] = {"commerce": commerce, "webhooks": webhooks, "dispatch": dispatch}

    entity_views = EntityViews(commerce, event_history(commerce.recorder), views.view)
    # The read models' tables and tracking records: beside the event stores on
    # PostgreSQL (the same pool), in readmodels.sqlite embedded.
    read_model_factory = InfrastructureFactory.construct(
        Environment(READ_MODELS_NAME, application_env(settings, READ_MODELS_NAME))
    )
    recorder = read_model_factory.tracking_recorder()
    assert isinstance(recorder, PostgresTrackingRecorder | SQLiteTrackingRecorder)
    read_models = ReadModelStore(
        recorder,
        sources,
        Context(view_at=entity_views, store_of=store_lookup(sources), warm_views=entity_views.warm),
        configure=lambda followers: prepare(followers, count_skipped),
    )
    services = Services(
        settings=settings,
        commerce=commerce,
        webhooks=webhooks,
        dispatch=dispatch,
        keeper=keeper,
        guard=guard,
        idempotency=KeyLedger(_key_tables(commerce, webhooks)),
        read_models=read_models,
    )
    services._closers.append(read_model_factory.close)
    # A webhook enabled again starts with a clean record: its circuit closes at once.
    webhooks.forgive = lambda webhook_id: services.schedule().forgive(webhook_id)
    return services


def counted_contention(application: str) -> Contention:
    """Turns and attempts for an application's commands, counted on `/metrics`."""
    return Contention(
        on_retry=COMMAND_RETRIES.labels(application).inc,
        on_exhausted=COMMAND_CONFLICTS.labels(application).inc,
    )


def _key_tables(*applications: Any) -> list[KeyTable]:
    """Where the keyed applications' recorders keep Idempotency-Keys (ADR 0023)."""
    tables: list[KeyTable] = []
    for application in applications:
        recorder = application.recorder
        keyed = isinstance(recorder, KeyedPostgresRecorder | KeyedSQLiteRecorder)
        assert keyed, f"the {application.name} recorder keeps no Idempotency-Keys"
        tables.append(recorder)
    return tables


def open_queue(services: Services) -> Queue:
    """The broker of `WEBROUND_BROKER_URL` (in-process when unset), closed last."""
    queue = make_broker(services.settings)
    services._closers.append(queue.broker.close)
    return queue


def circuit_policy(settings: Settings) -> CircuitPolicy:
    return CircuitPolicy(disable_after=timedelta(seconds=settings.auto_disable_after))


def open_schedule(services: Services) -> Schedule:
    return Schedule(services.dispatch.recorder, circuit_policy(services.settings))


def start_dispatcher(
    services: Services,
    queue: Queue,
    clock: Callable[[], datetime] | None = None,
    owner: Owner | None = None,
) -> Dispatcher:
    """Run the dispatcher — the fan-out, the webhook policies and the claims of the
    partitions ``owner`` holds (all of them by default) — in a background thread until
    `services.close()`."""
    schedule = services.schedule()
    if queue.in_process:
        # An in-process broker lost every message with the last process: hand out again
        # at once what was handed out then, instead of waiting for the leases to run out.
        schedule.release_leases()
    settings = services.settings
    policies = WebhookPolicies(
        services.webhooks,
        failing_since=lambda webhook_id: schedule.health(webhook_id).failing_since,
        disable_after=timedelta(seconds=settings.auto_disable_after),
    ).follower(services.dispatch)
    prepare([services.dispatch.fan_out, policies], count_skipped)
    signals = Signals()
    dispatcher = Dispatcher(
        services.dispatch,
        schedule,
        lambda messages: enqueue_many(queue, messages),
        owner=owner,
        signals=signals,
        policies=policies,
        lease_seconds=settings.lease_seconds,
        per_webhook=settings.webhook_concurrency,
        per_store=settings.store_concurrency,
        beat_every=settings.partition_lease_seconds / 3,
        clock=clock,
    )
    wakes = connect_signals(services, signals, [services.commerce, services.dispatch])
    runner = Runner(
        "dispatcher",
        dispatcher.step,
        signals,
        idle=dispatcher.seconds_to_next_due,
        max_idle=wakes.max_idle,
    ).start()

    def close() -> None:
        runner.stop()
        wakes.close()
        dispatcher.owner.close()
        PARTITIONS_OWNED.set(0)

    services._closers.append(close)
    return dispatcher


def start_dispatching(
    services: Services,
    queue: Queue,
    clock: Callable[[], datetime] | None = None,
) -> None:
    """The dispatcher and the read models' projector of this process.

    PostgreSQL: any number of processes dispatch at once, each the partitions and
    projector roles it leases (infrastructure/leases.py). Embedded (SQLite, one process
    per data directory): the process that holds the file lock does everything."""
    settings = services.settings
    roles = [follower.name for follower in services.read_models.followers]
    if settings.embedded:
        start_leader(services, queue, clock)
        return
    recorder: Any = services.dispatch.recorder
    owner = Leases(recorder.datastore, settings.partitions, roles, settings.partition_lease_seconds)
    start_dispatcher(services, queue, clock, owner)
    start_projector(services, owner)


@dataclass
class Wakes:
    """What signals a runner's sources' commits: in-process saves and, on PostgreSQL, a
    commit listener. ``max_idle``: how long the runner may sleep without a signal."""

    listener: CommitListener | None
    cancels: list[Callable[[], None]]

    def max_idle(self) -> float:
        # Without a working listener (SQLite, or reconnecting), commits of other
        # processes are seen by polling; with one, the wait is only a safety net.
        return MAX_IDLE_LISTENING if self.listener and self.listener.listening else MAX_IDLE_POLL

    def close(self) -> None:
        for cancel in self.cancels:
            cancel()
        if self.listener is not None:
            self.listener.close()


# How long a runner sleeps at most when nothing signals it: polling for other processes'
# commits where no notification can come, a safety net where one can.
MAX_IDLE_POLL = 1.0
MAX_IDLE_LISTENING = 30.0


def connect_signals(services: Services, signals: Signals, sources: list[Application[Any]]) -> Wakes:
    """Raise ``signals`` for commits to these applications: saves in this process at
    once (`application.recorded`), other processes' through PostgreSQL's NOTIFY."""
    cancels = [
        app.on_recorded(functools.partial(signals.raise_, app.name))
        for app in sources
        if isinstance(app, NotifiesOnRecord)
    ]
    by_channel = {
        app.recorder.channel_name: app.name
        for app in sources
        if isinstance(app.recorder, PostgresApplicationRecorder)
    }
    settings = services.settings
    url = settings.listen_url or settings.database_url
    listener = None
    if url is not None and url != "poll" and by_channel:
        # The same server and database as the stores; ``?schema=`` does not matter to
        # LISTEN (channels are database-wide: see infrastructure/wakeup.py).
        listener = CommitListener(
            url.split("?", 1)[0],
            list(by_channel),
            lambda channels: signals.raise_(*(by_channel[c] for c in channels if c in by_channel)),
        ).start()
    return Wakes(listener, cancels)


def start_projector(services: Services, owner: Owner | None = None) -> Runner:
    """Keep the read models in step with the event stores, in a background thread: the
    followers whose role ``owner`` holds (all of them by default)."""
    signals = Signals()
    sources: list[Application[Any]] = [services.commerce, services.webhooks, services.dispatch]
    wakes = connect_signals(services, signals, sources)
    store = services.read_models

    # Each source's follower is pulled when its source committed (or a poll), or while
    # it finds work: an idle pass reads nothing.
    pulled = [Pulled(follower, signals) for follower in store.followers]
    held: set[str] = set()

    def step() -> int:
        roles = {p.follower.name for p in pulled} if owner is None else owner.owned().roles
        done = 0
        for each in pulled:
            name = each.follower.name
            if name not in roles:
                held.discard(name)
                continue
            if name not in held:  # a role this process takes on: look at once
                held.add(name)
                each.again()
            done += each.pull()
        return done

    runner = Runner("projector", step, signals, max_idle=wakes.max_idle).start()

    def close() -> None:
        runner.stop()
        wakes.close()

    services._closers.append(close)
    return runner


def start_worker(
    services: Services,
    queue: Queue,
    clock: Callable[[], datetime] | None = None,
) -> dramatiq.Worker:
    """Consume delivery messages with `WEBROUND_WORKER_THREADS` threads until closed."""
    threads = services.settings.worker_threads
    sender = Sender(services.guard, USER_AGENT, max_connections=max(threads * 2, 10))
    recorder = AttemptRecorder(services.dispatch)
    declare_deliver_actor(queue, DeliveryWorker(sender, services.keeper, recorder, clock))
    # worker_timeout: how often an idle consumer and the worker threads look for a stop
    # (Redis consumers are woken by every enqueue; RabbitMQ pushes; in-process queues
    # block): a second costs little while idle and delays a shutdown by at most that.
    worker = dramatiq.Worker(queue.broker, worker_threads=threads, worker_timeout=1000)
    worker.start()

    def close() -> None:
        worker.stop()
        recorder.stop()
        sender.close()

    services._closers.append(close)
    return worker


def start_leader(
    services: Services,
    queue: Queue,
    clock: Callable[[], datetime] | None = None,
) -> Leadership:
    """The dispatcher and the projector, run only while this process holds the dispatcher
    lock (one active dispatcher per installation: infrastructure/leader.py); on standby
    until then, and again if the lock is lost. `services.close()` stops them and lets go."""
    import dataclasses

    def start() -> Callable[[], None]:
        # The same stores, with closers of its own: the active part stops on its own.
        active = dataclasses.replace(services, _closers=[])

        def stop() -> None:
            while active._closers:
                active._closers.pop()()

        try:
            start_dispatcher(active, queue, clock, SoleOwner(services.settings.partitions, ()))
            start_projector(active)
        except BaseException:
            stop()
            raise
        return stop

    leadership = Leadership(
        dispatcher_lock(services.settings), start, on_change=DISPATCHER_ACTIVE.set
    ).start()
    services._closers.append(leadership.close)
    return leadership


def open_gauges(services: Services) -> ServiceGauges:
    """The scrape-time gauges of `GET /metrics`: the schedule tables, opened here for
    reading, and the read models; closed with the services."""
    return ServiceGauges(services, services.schedule())
