"""Configuration: every environment variable the service reads, in one table, read once.

`SETTINGS` is the one source of truth: `Settings.from_env` parses it and
`docs/configuration.md` is generated from it (`webround settings --markdown`). Nothing
here reads the environment at import time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain.delivery import DEFAULT_RETRY_SCHEDULE

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting whose value cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    description: str
    parse: Callable[[str], Any] = str


def _networks(value: str) -> tuple[Network, ...]:
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
    except ValueError as error:
        raise SettingsError(f"not a CIDR list: {error}") from None


def _schedule(value: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise SettingsError("must be comma-separated seconds, e.g. 5,300,1800") from None
    if not delays or any(delay < 0 for delay in delays):
        raise SettingsError("must list at least one delay, none negative")
    return delays


def _port(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
        raise SettingsError("must be a TCP port number")
    return int(value)


def _positive_int(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise SettingsError("must be a whole number, at least 1")
    return int(value)


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingsError("must be a number of seconds") from None
    if not number > 0:
        raise SettingsError("must be positive")
    return number


def _database_url(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://")):
        raise SettingsError("must be a postgresql:// URL (leave it unset for embedded SQLite)")
    return value


def _listen_url(value: str) -> str:
    if value != "poll":
        _database_url(value)
    return value


def _api_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise SettingsError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8000")
    return value.rstrip("/")


def _log_format(value: str) -> str:
    if value not in ("text", "json"):
        raise SettingsError("must be text or json")
    return value


def _cookie_secure(value: str) -> str:
    if value not in ("auto", "always"):
        raise SettingsError("must be auto or always")
    return value


def _broker_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
        raise SettingsError("must be a redis:// or amqp:// URL (unset: in-process broker)")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "WEBROUND_DATA_DIR",
        ".webround",
        "Directory for embedded data: SQLite files and the generated master key file.",
        Path,
    ),
    Setting(
        "WEBROUND_DATABASE_URL",
        None,
        "`postgresql://user:password@host:port/dbname` selects PostgreSQL for every store of "
        "ours (optional `?schema=NAME`); unset, the embedded SQLite files are used.",
        _database_url,
    ),
    Setting(
        "WEBROUND_BROKER_URL",
        None,
        "`redis://…` or `amqp://…` selects the Dramatiq broker for worker processes; unset, "
        "an in-process broker and worker are used (embedded mode).",
        _broker_url,
    ),
    Setting(
        "WEBROUND_MASTER_KEY",
        None,
        "Base64 of 32 bytes: the AES-256-GCM key that encrypts webhook signing secrets.",
    ),
    Setting(
        "WEBROUND_MASTER_KEY_FILE",
        None,
        "Path of a 0600 file holding the master key; unset (and no `WEBROUND_MASTER_KEY`), "
        "`master.key` in the data directory is generated on first start.",
        Path,
    ),
    Setting(
        "WEBROUND_ALLOWED_TARGETS",
        "",
        "Comma-separated CIDRs that webhooks may target although they are loopback or private "
        "(development and tests only), e.g. `127.0.0.0/8,::1/128`.",
        _networks,
    ),
    Setting(
        "WEBROUND_RETRY_SCHEDULE",
        ",".join(f"{delay:g}" for delay in DEFAULT_RETRY_SCHEDULE),
        "Comma-separated seconds to wait before each retry of a failed delivery (±20% jitter "
        "is applied); one attempt more than there are entries.",
        _schedule,
    ),
    Setting(
        "WEBROUND_WORKER_THREADS",
        "32",
        "Delivery attempts a worker process (or the embedded worker) runs at once.",
        _positive_int,
    ),
    Setting(
        "WEBROUND_WEBHOOK_CONCURRENCY",
        "16",
        "Deliveries of one webhook in flight at once, so a slow endpoint can hold at most "
        "this many worker threads (keep it below WEBROUND_WORKER_THREADS).",
        _positive_int,
    ),
    Setting(
        "WEBROUND_STORE_CONCURRENCY",
        "16",
        "Deliveries of one store (all its webhooks) in flight at once, so that a slow or "
        "hostile tenant holds at most this many worker threads and the others always have "
        "some (keep it below the worker threads of the installation).",
        _positive_int,
    ),
    Setting(
        "WEBROUND_MAX_WEBHOOKS_PER_STORE",
        "50",
        "The most webhooks one store may have at once (deleted ones do not count); one "
        "more is refused with a 409, so no tenant can fill the dispatcher with endpoints.",
        _positive_int,
    ),
    Setting(
        "WEBROUND_AUTO_DISABLE_AFTER",
        "432000",
        "Seconds of failed deliveries without a single success after which a webhook is "
        "disabled (default: 5 days).",
        _positive_float,
    ),
    Setting(
        "WEBROUND_LEASE_SECONDS",
        "60",
        "How long a delivery handed to the queue may stay unrecorded before the dispatcher "
        "hands it out again (a worker or broker lost it). Keep above the longest timeout.",
        _positive_float,
    ),
    Setting(
        "WEBROUND_PARTITIONS",
        "32",
        "Partitions the stores' work is divided into, shared out among the `webround "
        "dispatcher` processes (each owns some, leased in PostgreSQL). Fixed when an "
        "installation first starts: more than you will ever run dispatchers.",
        _positive_int,
    ),
    Setting(
        "WEBROUND_PARTITION_LEASE_SECONDS",
        "15",
        "How long a dispatcher's lease on its partitions lasts without renewal: the partitions "
        "of a dispatcher that died move to the others after at most this long (renewed every "
        "third of it).",
        _positive_float,
    ),
    Setting(
        "WEBROUND_LISTEN_URL",
        None,
        "Where dispatchers LISTEN for commits (a session of their own): unset, the database "
        "URL; behind PgBouncer in transaction pooling, a direct `postgresql://` URL of the "
        "server, or `poll` to listen nowhere and look every second instead.",
        _listen_url,
    ),
    Setting(
        "WEBROUND_DB_POOL_SIZE",
        "4",
        "PostgreSQL connections one process keeps for its work (one pool per process); a "
        "dispatcher holds one more to listen for commits. See docs/operations.md for the "
        "budget of N processes.",
        _positive_int,
    ),
    Setting(
        "WEBROUND_COOKIE_SECURE",
        "auto",
        "`auto`: the dashboard's cookies are `Secure` when the request came over https "
        "(a dashboard on plain http on a LAN keeps its session); `always`: `Secure` on "
        "every answer (set it behind a TLS proxy that does not forward the scheme).",
        _cookie_secure,
    ),
    Setting("WEBROUND_HOST", "127.0.0.1", "Interface `webround serve|api` listen on.", str),
    Setting("WEBROUND_PORT", "8000", "Port `webround serve|api` listen on.", _port),
    Setting(
        "WEBROUND_LOG_FORMAT",
        "text",
        "`text` (readable, for a terminal) or `json` (one JSON object per line with the "
        "record's fields: set this in production).",
        _log_format,
    ),
    Setting(
        "WEBROUND_METRICS_PORT",
        None,
        "When set, `webround worker` and `webround dispatcher` serve their own Prometheus "
        "metrics (delivery counters, attempt latency) on this port of WEBROUND_HOST; the "
        "API's `GET /metrics` has the queue and projection gauges and its own counters.",
        _port,
    ),
    Setting(
        "WEBROUND_API_URL",
        None,
        "The service the API commands (`webround webhooks`, `events`, `deliveries` and "
        "`listen`) talk to; unset, `http://WEBROUND_HOST:WEBROUND_PORT` (`--api-url` "
        "overrides it).",
        _api_url,
    ),
    Setting(
        "WEBROUND_API_KEY",
        None,
        "The API key those commands authenticate with (a store's key, `wr_…`). Kept out of "
        "the command line so that it shows in no shell history or process list.",
    ),
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".webround")
    database_url: str | None = None
    broker_url: str | None = None
    master_key: str | None = field(default=None, repr=False)
    master_key_file: Path | None = None
    allowed_targets: tuple[Network, ...] = ()
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    worker_threads: int = 32
    webhook_concurrency: int = 16
    store_concurrency: int = 16
    max_webhooks_per_store: int = 50
    auto_disable_after: float = 432000.0
    lease_seconds: float = 60.0
    partitions: int = 32
    partition_lease_seconds: float = 15.0
    db_pool_size: int = 4
    listen_url: str | None = None
    cookie_secure: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "text"
    metrics_port: int | None = None
    api_url: str | None = None
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.name, setting.default)
            if raw is None or (raw == "" and setting.default is None):
                continue
            try:
                values[setting.name.removeprefix("WEBROUND_").lower()] = setting.parse(raw)
            except (SettingsError, ValueError) as error:
                raise SettingsError(f"{setting.name}: {error}") from None
        return cls(**values)

    @property
    def service_url(self) -> str:
        """Where the API commands find the service: `WEBROUND_API_URL`, else this
        machine's `serve` or `api` on WEBROUND_HOST and WEBROUND_PORT."""
        if self.api_url:
            return self.api_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def embedded(self) -> bool:
        """True when no database is configured: SQLite files and an in-process broker."""
        return self.database_url is None


def markdown_table() -> str:
    """The configuration reference of docs/configuration.md, generated from `SETTINGS`."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else "unset"
        rows.append(f"| `{setting.name}` | {default} | {setting.description} |")
    return "\n".join(rows) + "\n"
