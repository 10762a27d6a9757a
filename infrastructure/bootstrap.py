"""The composition root: builds every application and adapter from `Settings`, once.

Nothing else in the code reads configuration or opens connections on its own; tests build
the same graph with their own `Settings` (a temporary data dir, a private PostgreSQL
schema) and so exercise exactly what production runs.

`build` makes the applications every process needs; `start_dispatcher` and
`start_worker` add the background parts of the dispatcher and worker roles. Embedded mode
(`webround serve`) starts both in one process on an in-process broker.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dramatiq
from eventsourcing.postgres import PostgresApplicationRecorder

from application import views
from application.commerce import Commerce
from application.contention import Contention
from application.directory import WebhookDirectory
from application.dispatch import Dispatch
from application.webhooks import Webhooks
from domain.delivery import CircuitPolicy, RetryPolicy
from infrastructure.broker import Queue, declare_deliver_actor, enqueue_many, make_broker
from infrastructure.dispatcher import IDLE_LISTENING, IDLE_POLL, Dispatcher
from infrastructure.history import event_history
from infrastructure.idempotency import (
    KeyedPostgresRecorder,
    KeyedSQLiteRecorder,
    KeyLedger,
    KeyTable,
)
from infrastructure.leader import Leadership, dispatcher_lock
from infrastructure.metrics import (
    COMMAND_CONFLICTS,
    COMMAND_RETRIES,
    DISPATCHER_ACTIVE,
    ServiceGauges,
)
from infrastructure.persistence import application_env, ensure_schema, schema_lock
from infrastructure.readmodels import (
    EntityViews,
    ReadModelStore,
    StalePosition,
    open_database,
    store_lookup,
)
from infrastructure.schedule import Schedule, open_schedule_db
from infrastructure.secrets import MasterKey, SealingKeeper, SecretBox
from infrastructure.sender import Sender
from infrastructure.settings import Settings
from infrastructure.ssrf import TargetGuard
from infrastructure.wakeup import CommitListener
from infrastructure.worker import USER_AGENT, AttemptRecorder, DeliveryWorker
from projections.envelopes import build_envelope
from projections.readmodels import Context

log = logging.getLogger("webround")

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
        """The delivery schedule's tables, opened on first use (the API reads circuit
        state and gauges from them; only the dispatcher writes them)."""
        with self._schedule_lock:
            if self._schedule is None:
                self._schedule = open_schedule(self.settings)
                self._closers.insert(0, self._schedule.close)
            return self._schedule

    def close(self) -> None:
        """Stop background parts (newest first), then close the stores."""
        self.stopping.set()
        while self._closers:
            self._closers.pop()()
        self.read_models.close()
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
    )
    dispatch = Dispatch(
        env=application_env(settings, Dispatch.name),
        commerce=commerce,
        directory=WebhookDirectory(webhooks),
        history=event_history,
        build_envelope=build_envelope,
        policy=RetryPolicy(settings.retry_schedule),
        clock=clock,
        random=jitter or random.random,
    )
    sources: dict[str, Any] = {"commerce": commerce, "webhooks": webhooks, "dispatch": dispatch}

    entity_views = EntityViews(commerce, event_history(commerce.recorder), views.view)
    read_models = ReadModelStore(
        open_database(settings.data_dir, settings.database_url),
        sources,
        Context(view_at=entity_views, store_of=store_lookup(sources), warm_views=entity_views.warm),
    )
    return Services(
        settings=settings,
        commerce=commerce,
        webhooks=webhooks,
        dispatch=dispatch,
        keeper=keeper,
        guard=guard,
        idempotency=KeyLedger(_key_tables(commerce, webhooks)),
        read_models=read_models,
    )


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


def open_schedule(settings: Settings) -> Schedule:
    policy = CircuitPolicy(disable_after=timedelta(seconds=settings.auto_disable_after))
    with schema_lock(settings.database_url):
        return Schedule(open_schedule_db(settings.data_dir, settings.database_url), policy)


def start_dispatcher(
    services: Services,
    queue: Queue,
    clock: Callable[[], datetime] | None = None,
) -> Dispatcher:
    """Run the dispatcher loop in a background thread until `services.close()`."""
    schedule = open_schedule(services.settings)
    if queue.in_process:
        # An in-process broker lost every message with the last process: hand out again
        # at once what was handed out then, instead of waiting for the leases to run out.
        schedule.release_leases()
    dispatcher = Dispatcher(
        services.dispatch,
        schedule,
        lambda messages: enqueue_many(queue, messages),
        webhooks=services.webhooks,
        lease_seconds=services.settings.lease_seconds,
        per_webhook=services.settings.webhook_concurrency,
        clock=clock,
    )
    listener = start_commit_listener(services, dispatcher.nudge)
    # Saves in this process (API commands, workers' attempts in `serve`) wake it at once.
    cancels = [app.on_recorded(dispatcher.nudge) for app in (services.commerce, services.dispatch)]

    def idle_seconds() -> float:
        # Poll as before whenever no notification can come (SQLite, or the listener
        # reconnecting); else new commits nudge, and the wait only bounds time-driven work.
        return IDLE_LISTENING if listener is not None and listener.listening else IDLE_POLL

    stop = threading.Event()
    thread = threading.Thread(
        target=dispatcher.run, args=(stop, idle_seconds), name="dispatcher", daemon=True
    )
    thread.start()

    def close() -> None:
        stop.set()
        for cancel in cancels:
            cancel()
        dispatcher.nudge()
        thread.join(timeout=10)
        if listener is not None:
            listener.close()
        schedule.close()

    services._closers.append(close)
    return dispatcher


def start_commit_listener(
    services: Services, on_commit: Callable[[], None]
) -> CommitListener | None:
    """On PostgreSQL, call ``on_commit`` whenever events are committed to the commerce
    store (new store events to turn into envelopes) or the dispatch store (new deliveries
    to schedule, attempts recorded by workers: retries to plan, in-flight room freed).
    None on SQLite, which has no such notifications."""
    url = services.settings.database_url
    if url is None:
        return None
    channels = [
        recorder.channel_name
        for recorder in (services.commerce.recorder, services.dispatch.recorder)
        if isinstance(recorder, PostgresApplicationRecorder)
    ]
    if not channels:
        return None
    # The same server and database as the stores; ``?schema=`` does not matter to
    # LISTEN (channels are database-wide: see infrastructure/wakeup.py).
    return CommitListener(url.split("?", 1)[0], channels, on_commit).start()


def start_projector(services: Services, idle_seconds: float = 0.05) -> threading.Thread:
    """Keep the read models in step with the event stores, in a background thread."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                busy = services.read_models.catch_up_all()
            except StalePosition:
                continue  # a rebuild swapped a model in: start again from its position
            except Exception:
                log.exception("read model pass failed; retrying")
                stop.wait(1.0)
                continue
            if not busy:
                stop.wait(idle_seconds)

    thread = threading.Thread(target=run, name="projector", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(timeout=10)

    services._closers.append(close)
    return thread


def start_worker(
    services: Services,
    queue: Queue,
    clock: Callable[[], datetime] | None = None,
) -> dramatiq.Worker:
    """Consume delivery messages with `WEBROUND_WORKER_THREADS` threads until closed."""
    threads = services.settings.worker_threads
    sender = Sender(services.guard, USER_AGENT, max_connections=max(threads * 2, 10))
    recorder = AttemptRecorder(services.dispatch, services.webhooks)
    declare_deliver_actor(queue, DeliveryWorker(sender, services.keeper, recorder, clock))
    worker = dramatiq.Worker(queue.broker, worker_threads=threads, worker_timeout=100)
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
            start_dispatcher(active, queue, clock)
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
