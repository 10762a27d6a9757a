"""What every role of the `webround` command checks before it works, and the one line an
operator reads when it cannot start.

- **A master key in production.** With `WEBROUND_DATABASE_URL` set, every process must be
  given the installation's key (`WEBROUND_MASTER_KEY` or `WEBROUND_MASTER_KEY_FILE`): a
  key file generated in each host's data directory would differ from host to host.
- **The same master key everywhere.** The first process to start records a key check
  value (a known text sealed under its key: `domain.tenancy.MasterKeyCheck`); every
  process opens it at start and refuses to run with another key. An installation older
  than the check proves the key on a stored signing secret before recording one.
- **Operator errors as one line.** A database that cannot be reached or refuses more
  connections, a key that cannot be read or is not the installation's: `StartupError`,
  whose message names the setting to fix, and a non-zero exit status (2 for settings, 1
  for the environment). See docs/adr/0021-master-key-required-and-checked.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.tenancy import MASTER_KEY_CHECK_ID, MasterKeyCheck
from domain.webhook import Webhook
from infrastructure.secrets import MasterKeyError, SealingKeeper, SecretUnsealError
from infrastructure.settings import Settings

if TYPE_CHECKING:
    from infrastructure.bootstrap import Services

KNOWN_TEXT: Final = b"webround master key check, version 1"
CONTEXT: Final = "master-key-check"
_KEY_SETTINGS: Final = "WEBROUND_MASTER_KEY or WEBROUND_MASTER_KEY_FILE"
_WEBHOOK_CREATED: Final = f"{Webhook.__module__}:Webhook.Created"


class StartupError(Exception):
    """A role cannot start; the message is the one line to show, naming what to fix."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def open_services(settings: Settings) -> Services:
    """The services of a `webround` role, once the checks above pass."""
    from infrastructure.bootstrap import build

    if settings.database_url is not None and not (settings.master_key or settings.master_key_file):
        raise StartupError(
            f"set {_KEY_SETTINGS}: with WEBROUND_DATABASE_URL every process of the "
            "installation needs its one master key (a key generated here would differ "
            "on every host, and no other process could use what this one seals)"
        )
    try:
        services = build(settings)
    except MasterKeyError as error:
        raise StartupError(f"master key: {error}") from None
    except Exception as error:
        explained = database_problem(error, settings)
        if explained is None:
            raise
        raise StartupError(explained, exit_code=1) from None
    try:
        check_master_key(services)
    except BaseException:
        services.close()
        raise
    return services


def check_master_key(services: Services) -> None:
    """Raise `StartupError` unless this process's master key is the installation's."""
    webhooks, keeper = services.webhooks, services.keeper
    for _ in range(3):
        try:
            check: MasterKeyCheck = webhooks.repository.get(MASTER_KEY_CHECK_ID)
        except AggregateNotFoundError:
            _check_a_stored_secret(services)
            try:
                webhooks.save(MasterKeyCheck(keeper.seal_bytes(KNOWN_TEXT, CONTEXT)))
            except IntegrityError:
                continue  # another process recorded it meanwhile: check against that
            return
        try:
            if keeper.open_bytes(check.sealed, CONTEXT) == KNOWN_TEXT:
                return
        except SecretUnsealError:
            pass
        raise _other_key(keeper, check.sealed)
    raise StartupError("could not record the master key check value; start again")


def _check_a_stored_secret(services: Services) -> None:
    """Before the first key check value is recorded: the key must open the secrets that
    are already stored (one webhook's is enough: they are all sealed under one key)."""
    webhooks = services.webhooks
    first = webhooks.recorder.select_notifications(start=None, limit=1, topics=[_WEBHOOK_CREATED])
    if not first:
        return
    webhook: Webhook = webhooks.repository.get(UUID(str(first[0].originator_id)))
    try:
        services.keeper.open_secret(webhook.id, webhook.secrets[0].sealed)
    except SecretUnsealError:
        raise _other_key(services.keeper, webhook.secrets[0].sealed) from None


def _other_key(keeper: SealingKeeper, sealed: str) -> StartupError:
    parts = sealed.split(":")
    theirs = f" (key id {parts[1]})" if len(parts) == 3 else ""
    return StartupError(
        f"the master key of this process (key id {keeper.key_id}) is not the one this "
        f"installation's secrets are sealed under{theirs}: set {_KEY_SETTINGS} to the "
        "key every other process uses"
    )


def database_problem(error: BaseException, settings: Settings) -> str | None:
    """One line for an error that means the database cannot be used, or None."""
    import psycopg

    found: BaseException | None = error
    seen: set[int] = set()
    while found is not None and not isinstance(found, psycopg.Error) and id(found) not in seen:
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    if not isinstance(found, psycopg.OperationalError):
        return None
    text = str(found).strip()
    where = _where(settings.database_url or "")
    if "too many clients" in text or "too many connections" in text:
        return (
            f"the database at {where} accepts no more connections (too many clients): "
            "raise its max_connections, or run fewer webround processes "
            "(WEBROUND_DATABASE_URL names the server)"
        )
    reason = text.split("\n", 1)[0].split(" failed: ")[-1]
    return f"cannot use the database at {where} (WEBROUND_DATABASE_URL): {reason}"


def _where(url: str) -> str:
    """Host, port and database of the URL: never its password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
