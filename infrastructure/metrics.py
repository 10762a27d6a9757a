"""Prometheus metrics (SPEC §10): deliveries by outcome, attempt latency, queue lag,
projection lag. See docs/adr/0009-prometheus-and-json-logs.md.

Two kinds, exposed differently:

- **Per process** — counted where the work happens, in `prometheus_client`'s default
  registry: ``webround_delivery_attempts_total{outcome}`` and the
  ``webround_delivery_attempt_seconds`` histogram (each attempt once it is durably
  recorded, by the worker's `AttemptRecorder`), ``webround_dispatcher_active``, and
  ``webround_command_retries_total`` / ``webround_command_conflicts_total{application}``
  (commands run again after losing a race to save, and those that lost every time).
  With several processes each has its own: `webround worker` and `webround dispatcher`
  serve theirs on ``WEBROUND_METRICS_PORT`` (`serve_process_metrics`), and the API's
  ``GET /metrics`` shows its own process's (in `webround serve` that is everything).
- **Of the installation** — read from the database at scrape time by `ServiceGauges`:
  ``webround_queue_lag_seconds``, ``webround_deliveries_pending``,
  ``webround_deliveries_in_flight``, ``webround_circuit_open_webhooks`` (the schedule
  tables) and ``webround_projection_lag_events{model,source}`` (the read models).
  They are the same whichever process asks, so only the API serves them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, start_http_server
from prometheus_client.registry import Collector

from domain.delivery import DeliveryAttempted
from infrastructure.schedule import Schedule
from infrastructure.settings import Settings

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from infrastructure.bootstrap import Services

log = logging.getLogger("webround.metrics")

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OUTCOMES = ("succeeded", "failed", "retrying")

ATTEMPTS = Counter(
    "webround_delivery_attempts",
    "Delivery attempts recorded by this process, by outcome: succeeded, failed (retries "
    "exhausted or 410 Gone) or retrying (failed, another attempt scheduled).",
    ["outcome"],
)
for _outcome in OUTCOMES:
    ATTEMPTS.labels(_outcome)  # every outcome is exposed, at zero until it happens

ATTEMPT_SECONDS = Histogram(
    "webround_delivery_attempt_seconds",
    "Duration of delivery attempts recorded by this process: request sent to answer read "
    "(or the error).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60),
)

SKIPPED_EVENTS = Counter(
    "webround_follower_skipped_events",
    "Events a follower could not apply and skipped (recorded in skipped_events, logged), "
    "by follower: each is a bug or bad data to look at; the follower went on.",
    ["follower"],
)


def count_skipped(follower: str) -> None:
    SKIPPED_EVENTS.labels(follower).inc()


PARTITIONS_OWNED = Gauge(
    "webround_dispatcher_partitions",
    "Partitions of the stores' work this dispatcher process holds the lease of (0 on "
    "standby); the installation's partitions are shared among its dispatchers.",
)

COMMAND_RETRIES = Counter(
    "webround_command_retries",
    "Commands this process ran again because another process saved the same entity "
    "first (optimistic concurrency), by application.",
    ["application"],
)
COMMAND_CONFLICTS = Counter(
    "webround_command_conflicts",
    "Commands this process answered 409 'changed concurrently': every attempt lost the "
    "race (see ADR 0026), by application.",
    ["application"],
)
for _application in ("commerce", "webhooks"):
    COMMAND_RETRIES.labels(_application)  # exposed at zero until it happens
    COMMAND_CONFLICTS.labels(_application)

DISPATCHER_ACTIVE = Gauge(
    "webround_dispatcher_active",
    "1 while this process holds the dispatcher lock and dispatches, else 0 (standby).",
)


def observe_attempts(recorded: Iterable[DeliveryAttempted]) -> None:
    """Count attempts just recorded, by outcome."""
    for attempt in recorded:
        ATTEMPTS.labels(attempt.outcome).inc()
        ATTEMPT_SECONDS.observe(max(attempt.duration_ms, 0.0) / 1000)


def circuits_open(schedule: Schedule, now: datetime) -> int:
    """Webhooks whose circuit is open at ``now`` (no deliveries until its cool-down ends)."""
    return schedule.circuits_open(now)


class ServiceGauges(Collector):
    """The installation's gauges, read from the schedule and the read models per scrape.

    A source that cannot be read is left out of that scrape (and logged), never an error
    for the whole exposition.
    """

    def __init__(
        self,
        services: Services,
        schedule: Schedule,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.services = services
        self.schedule = schedule
        self._clock = clock or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        try:
            lag = self.schedule.oldest_due(now)
            pending = self.schedule.pending()
            in_flight = self.schedule.in_flight(now)
            open_circuits = circuits_open(self.schedule, now)
        except Exception:
            log.warning("metrics: cannot read the delivery schedule", exc_info=True)
        else:
            yield GaugeMetricFamily(
                "webround_queue_lag_seconds",
                "How long the oldest due, unclaimed delivery has waited.",
                value=lag,
            )
            yield GaugeMetricFamily(
                "webround_deliveries_pending",
                "Deliveries not finished yet: due, waiting for a retry, or in flight.",
                value=pending,
            )
            yield GaugeMetricFamily(
                "webround_deliveries_in_flight",
                "Deliveries handed to the queue and not recorded yet (lease running).",
                value=in_flight,
            )
            yield GaugeMetricFamily(
                "webround_circuit_open_webhooks",
                "Webhooks whose circuit breaker is open now.",
                value=open_circuits,
            )
        try:
            statuses = self.services.read_models.status()
        except Exception:
            log.warning("metrics: cannot read the read models' positions", exc_info=True)
        else:
            lag_events = GaugeMetricFamily(
                "webround_projection_lag_events",
                "Events of a source log a read model has not applied yet.",
                labels=["model", "source"],
            )
            for status in statuses:
                lag_events.add_metric([status.model, status.source], status.lag)
            yield lag_events


class _Together(Collector):
    def __init__(self, *collectors: Collector) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def exposition(gauges: Collector | None = None) -> bytes:
    """This process's metrics, and ``gauges`` when given, in the text exposition format."""
    if gauges is None:
        return generate_latest(REGISTRY)
    return generate_latest(_Together(REGISTRY, gauges))


def serve_process_metrics(settings: Settings) -> bool:
    """Serve this process's metrics on ``WEBROUND_METRICS_PORT``, when it is set; raises
    `OSError` when the port cannot be had (taken by another process: each process on a
    host needs a port of its own)."""
    if settings.metrics_port is None:
        return False
    start_http_server(settings.metrics_port, addr=settings.host)
    log.info(
        "metrics on http://%s:%d/metrics",
        settings.host,
        settings.metrics_port,
        extra={"port": settings.metrics_port},
    )
    return True
