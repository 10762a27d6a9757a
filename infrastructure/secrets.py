"""Webhook signing secrets and their encryption at rest.

Lives here:

- ``SigningSecret``: the ``whsec_<base64>`` value a subscriber uses to verify our
  signatures. It is shown once (on creation or rotation) and redacted everywhere else.
- ``MasterKey``: the AES-256 key that encrypts signing secrets at rest, loaded from
  ``WEBROUND_MASTER_KEY`` / ``WEBROUND_MASTER_KEY_FILE`` or a generated ``0600`` key
  file in the data directory.
- ``SecretBox``: seals a ``SigningSecret`` with AES-GCM under the master key, bound to
  a context (the webhook id), and opens it again inside the dispatch process.

Nothing here touches the file system or the network at import time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Final, NoReturn
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MasterKey",
    "MasterKeyError",
    "SecretBox",
    "SecretUnsealError",
    "SigningSecret",
]

# The Standard Webhooks prefix, not a credential.
SECRET_PREFIX: Final = "whsec_"  # noqa: S105
SECRET_BYTES: Final = 32
_MIN_SECRET_BYTES: Final = 16
_MAX_SECRET_BYTES: Final = 64

MASTER_KEY_BYTES: Final = 32
MASTER_KEY_FILENAME: Final = "master.key"

_SEAL_VERSION: Final = "v1"
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16


class MasterKeyError(Exception):
    """The master key configuration is missing, malformed or unsafe."""


class SecretUnsealError(Exception):
    """A sealed secret cannot be opened: wrong master key, wrong context or tampered."""


def _refuse_serialisation(obj: object) -> NoReturn:
    # Pickling would write the secret in plain text to wherever the pickle goes
    # (a cache, a queue, a crash dump); make that an explicit error instead.
    raise TypeError(f"{type(obj).__name__} must not be serialised")


class SigningSecret:
    """A ``whsec_<base64>`` webhook signing secret whose text is never printed.

    ``repr``/``str``/formatting show ``SigningSecret(whsec_***)``; ``reveal()`` is the
    one deliberate way to read the text, and ``key()`` gives the HMAC key bytes.
    """

    __slots__ = ("_key", "_text")

    _text: str
    _key: bytes

    def __init__(self, text: str) -> None:
        key = _decode_secret_text(text)
        # __setattr__ is disabled to make instances immutable, so bypass it once here.
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "_key", key)

    @classmethod
    def generate(cls) -> SigningSecret:
        """A fresh secret of 32 random bytes from the OS CSPRNG."""
        raw = secrets.token_bytes(SECRET_BYTES)
        return cls(SECRET_PREFIX + base64.b64encode(raw).decode("ascii"))

    @classmethod
    def parse(cls, text: str) -> SigningSecret:
        """Validate ``text`` as ``whsec_`` + base64 of 16..64 bytes.

        Raises ValueError whose message never contains ``text``.
        """
        return cls(text)

    def reveal(self) -> str:
        """The ``whsec_...`` text, for the one-time reveal to the API caller only."""
        return self._text

    def key(self) -> bytes:
        """The HMAC-SHA256 key: the base64-decoded bytes after ``whsec_``."""
        return self._key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({SECRET_PREFIX}***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SigningSecret):
            return NotImplemented
        return hmac.compare_digest(self._text, other._text)

    def __hash__(self) -> int:
        # Hash a digest rather than the text so the hash value is not a cheap oracle.
        return hash(hashlib.sha256(self._text.encode("ascii")).digest())

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> NoReturn:
        _refuse_serialisation(self)

    def __copy__(self) -> SigningSecret:
        # Immutable, so a copy can be the same object (and copy must not go via __reduce__).
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> SigningSecret:
        return self


def _decode_secret_text(text: str) -> bytes:
    invalid = ValueError(
        f"a signing secret must be {SECRET_PREFIX!r} followed by standard base64 of "
        f"{_MIN_SECRET_BYTES} to {_MAX_SECRET_BYTES} bytes"
    )
    if not isinstance(text, str) or not text.startswith(SECRET_PREFIX):
        raise invalid
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        # `from None`: the decoder's own error must not drag the text along.
        raise invalid from None
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise invalid
    return key


class MasterKey:
    """The 32-byte AES-256-GCM key that encrypts signing secrets at rest.

    Its repr shows only ``key_id`` (first 8 hex chars of SHA-256 of the key), which
    identifies the key that sealed a secret without revealing it.
    """

    __slots__ = ("_key", "_key_id")

    _key: bytes
    _key_id: str

    def __init__(self, key: bytes) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise MasterKeyError(f"a master key must be exactly {MASTER_KEY_BYTES} bytes")
        object.__setattr__(self, "_key", bytes(key))
        object.__setattr__(self, "_key_id", hashlib.sha256(key).hexdigest()[:8])

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key."""
        return cls(secrets.token_bytes(MASTER_KEY_BYTES))

    @classmethod
    def load(cls, *, key: str | None, key_file: Path | None, data_dir: Path) -> MasterKey:
        """Load the master key from configuration, in this order of precedence.

        1. ``key`` (``WEBROUND_MASTER_KEY``): base64, standard or urlsafe, of 32 bytes.
        2. ``key_file`` (``WEBROUND_MASTER_KEY_FILE``): an existing file holding that
           base64 text, not accessible to group or others.
        3. ``<data_dir>/master.key``: read if present, otherwise generated with mode 0600.

        Raises MasterKeyError for every configuration problem; messages never
        contain key material.
        """
        if key is not None:
            return cls(_decode_master_key(key, source="WEBROUND_MASTER_KEY"))
        if key_file is not None:
            return cls(_read_key_file(key_file, source="WEBROUND_MASTER_KEY_FILE"))
        return cls(_read_or_create_default_key_file(data_dir))

    @property
    def key_id(self) -> str:
        """First 8 hex chars of SHA-256 of the key: names the key, reveals nothing."""
        return self._key_id

    def reveal(self) -> bytes:
        """The raw key bytes, for the AEAD cipher only."""
        return self._key

    def encode(self) -> str:
        """The key as standard base64, the format ``load`` accepts (for key files)."""
        return base64.b64encode(self._key).decode("ascii")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self._key_id}, key=***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self._key_id)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> NoReturn:
        _refuse_serialisation(self)

    def __copy__(self) -> MasterKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> MasterKey:
        return self


def _decode_master_key(text: str, *, source: str) -> bytes:
    invalid = MasterKeyError(
        f"{source} must be base64 (standard or urlsafe) of {MASTER_KEY_BYTES} bytes"
    )
    # Accept both alphabets and missing padding: keys are pasted from many tools.
    normalised = text.strip().replace("-", "+").replace("_", "/")
    normalised += "=" * (-len(normalised) % 4)
    try:
        raw = base64.b64decode(normalised, validate=True)
    except (binascii.Error, ValueError):
        # `from None`: never chain an error that might quote the value.
        raise invalid from None
    if len(raw) != MASTER_KEY_BYTES:
        raise invalid
    return raw


def _read_key_file(path: Path, *, source: str) -> bytes:
    try:
        # Check the mode on the open descriptor, not the path, so the file we
        # check is the file we read.
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise MasterKeyError(f"{source}: master key file {path} does not exist") from None
    except OSError as exc:
        raise MasterKeyError(
            f"{source}: cannot open master key file {path}: {exc.strerror}"
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MasterKeyError(
                f"{source}: master key file {path} is accessible to group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run `chmod 600 {path}`"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            content = handle.read()
    except OSError as exc:
        raise MasterKeyError(
            f"{source}: cannot read master key file {path}: {exc.strerror}"
        ) from None
    finally:
        os.close(fd)
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        raise MasterKeyError(
            f"{source}: master key file {path} must hold base64 of {MASTER_KEY_BYTES} bytes"
        ) from None
    return _decode_master_key(text, source=f"{source} ({path})")


def _read_or_create_default_key_file(data_dir: Path) -> bytes:
    path = data_dir / MASTER_KEY_FILENAME
    source = "default master key file"
    if path.exists():
        return _read_key_file(path, source=source)
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise MasterKeyError(f"cannot create data directory {data_dir}: {exc.strerror}") from None
    key = MasterKey.generate()
    if _publish_key_file(path, (key.encode() + "\n").encode("ascii")):
        return key.reveal()
    # Another process created the file first: its key is the one everybody must use.
    return _read_key_file(path, source=source)


def _publish_key_file(path: Path, content: bytes) -> bool:
    """Create ``path`` with ``content`` and mode 0600 unless it exists; True if created.

    The content goes to a private temporary file first and is then hard-linked into
    place, so a concurrent reader sees either no file or the complete key, never a
    half-written one, and a concurrent creator never overwrites a key in use.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    except OSError as exc:
        raise MasterKeyError(
            f"cannot create master key file {path}: {exc.strerror}; "
            "set WEBROUND_MASTER_KEY or WEBROUND_MASTER_KEY_FILE instead"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


class SecretBox:
    """Encrypts signing secrets at rest with AES-256-GCM under the master key.

    A sealed secret reads ``v1:<key_id>:<base64url(nonce || ciphertext || tag)>``. The
    context (the webhook id) is authenticated associated data, so a sealed secret
    copied onto another webhook fails to open.
    """

    __slots__ = ("_aead", "_key_id")

    def __init__(self, master_key: MasterKey) -> None:
        self._aead = AESGCM(master_key.reveal())
        self._key_id = master_key.key_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self._key_id})"

    @property
    def key_id(self) -> str:
        return self._key_id

    def seal(self, secret: SigningSecret, *, context: str) -> str:
        """Encrypt ``secret`` bound to ``context``; a fresh random nonce every time."""
        return self.seal_bytes(secret.reveal().encode("ascii"), context=context)

    def open(self, sealed: str, *, context: str) -> SigningSecret:
        """Decrypt a sealed secret; SecretUnsealError unless key, context and data match."""
        plaintext = self.open_bytes(sealed, context=context)
        try:
            return SigningSecret.parse(plaintext.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            # Authenticated but not a secret: only possible if we sealed something else.
            raise SecretUnsealError("sealed data is not a signing secret") from None

    def seal_bytes(self, data: bytes, *, context: str) -> str:
        """Encrypt any confidential value (e.g. custom header values) bound to ``context``."""
        _check_context(context)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, data, self._associated_data(context))
        payload = base64.urlsafe_b64encode(nonce + ciphertext).decode("ascii")
        return f"{_SEAL_VERSION}:{self._key_id}:{payload}"

    def open_bytes(self, sealed: str, *, context: str) -> bytes:
        _check_context(context)
        parts = sealed.split(":")
        if len(parts) != 3 or parts[0] != _SEAL_VERSION:
            raise SecretUnsealError(f"not a {_SEAL_VERSION} sealed secret")
        _, key_id, payload = parts
        if key_id != self._key_id:
            raise SecretUnsealError(
                f"secret was sealed under master key {key_id!r}, "
                f"but the configured master key is {self._key_id!r}"
            )
        try:
            blob = base64.b64decode(payload, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise SecretUnsealError("sealed secret payload is not valid base64url") from None
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise SecretUnsealError("sealed secret payload is truncated")
        nonce, ciphertext = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, self._associated_data(context))
        except InvalidTag:
            raise SecretUnsealError(
                "sealed secret failed authentication: tampered, or sealed for another context"
            ) from None

    def _associated_data(self, context: str) -> bytes:
        # Binding the version and key id too means neither header can be edited
        # without the tag failing, on top of binding the secret to its webhook.
        return f"{_SEAL_VERSION}:{self._key_id}:{context}".encode()


def _check_context(context: str) -> None:
    if not context:
        raise ValueError("a sealing context (e.g. the webhook id) is required")


class SealingKeeper:
    """The application's `SecretKeeper`: new signing secrets and sealed header values."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box

    @property
    def key_id(self) -> str:
        """The master key's id (first 8 hex characters of its SHA-256): names it, reveals
        nothing."""
        return self._box.key_id

    def new_secret(self, webhook_id: UUID) -> tuple[str, str]:
        secret = SigningSecret.generate()
        return secret.reveal(), self._box.seal(secret, context=str(webhook_id))

    def seal_headers(self, webhook_id: UUID, headers: dict[str, str]) -> str:
        data = json.dumps(headers, sort_keys=True).encode()
        return self._box.seal_bytes(data, context=f"{webhook_id}:headers")

    def open_headers(self, webhook_id: UUID, sealed: str) -> dict[str, str]:
        headers: dict[str, str] = json.loads(
            self._box.open_bytes(sealed, context=f"{webhook_id}:headers")
        )
        return headers

    def seal_bytes(self, data: bytes, context: str) -> str:
        """Any other confidential value, bound to ``context``."""
        return self._box.seal_bytes(data, context=context)

    def open_bytes(self, sealed: str, context: str) -> bytes:
        return self._box.open_bytes(sealed, context=context)

    def open_secret(self, webhook_id: UUID, sealed: str) -> SigningSecret:
        return self._box.open(sealed, context=str(webhook_id))
