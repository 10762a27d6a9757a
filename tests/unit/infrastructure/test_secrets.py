"""Signing secrets, the master key and the AES-GCM box that keeps secrets encrypted at rest."""

from __future__ import annotations

import base64
import copy
import os
import pickle
import stat
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from infrastructure.secrets import (
    MasterKey,
    MasterKeyError,
    SecretBox,
    SecretUnsealError,
    SigningSecret,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX-only")


def _renderings(value: object) -> list[str]:
    return [repr(value), str(value), f"{value}", f"{value!r}", "%s" % (value,), "%r" % (value,)]  # noqa: UP031


def _full_traceback(exc: BaseException) -> str:
    # What a log handler would print, chained exceptions included.
    return "".join(traceback.format_exception(exc))


def _key_spellings(raw: bytes) -> list[str]:
    return [
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
    ]


# --- SigningSecret ---------------------------------------------------------------------


def test_generated_secret_round_trips_through_parse() -> None:
    # Given a freshly generated secret
    secret = SigningSecret.generate()

    # When its revealed text is parsed back
    parsed = SigningSecret.parse(secret.reveal())

    # Then it is the same secret: whsec_ + base64 of 32 random bytes, which is the HMAC key
    assert parsed == secret
    assert hash(parsed) == hash(secret)
    assert secret.reveal().startswith("whsec_")
    assert base64.b64decode(secret.reveal().removeprefix("whsec_")) == secret.key()
    assert len(secret.key()) == 32


def test_generated_secrets_differ() -> None:
    # Given / When two secrets are generated
    # Then they are different
    assert SigningSecret.generate() != SigningSecret.generate()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # wrong prefix
        "whsec_not base64 at all!!",
        "whsec_" + base64.b64encode(b"x" * 15).decode(),  # too short
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # too long
    ],
)
def test_malformed_secret_is_refused_without_echoing_it(text: str) -> None:
    # Given a malformed secret text
    # When it is parsed
    with pytest.raises(ValueError, match="whsec_") as excinfo:
        SigningSecret.parse(text)

    # Then the error explains the format but does not repeat the text, even in a chained error
    if text:
        assert text.removeprefix("whsec_") not in _full_traceback(excinfo.value)


def test_secret_text_never_appears_when_printed() -> None:
    # Given a secret
    secret = SigningSecret.generate()
    text = secret.reveal()

    # When it is rendered in every usual way (repr, str, f-strings, %-formatting, containers)
    renderings = [*_renderings(secret), repr([secret]), str({"secret": secret})]

    # Then none of them contains the text or its key, and the repr says it is redacted
    for rendered in renderings:
        for spelling in [text, *_key_spellings(secret.key())]:
            assert spelling not in rendered
    assert repr(secret) == "SigningSecret(whsec_***)"


def test_secret_refuses_to_be_pickled() -> None:
    # Given a secret
    secret = SigningSecret.generate()

    # When / Then pickling it (which would write it out in plain text) fails
    with pytest.raises(TypeError, match="must not be serialised"):
        pickle.dumps(secret)


def test_secret_is_immutable_and_copies_are_itself() -> None:
    # Given a secret
    secret = SigningSecret.generate()

    # When / Then it cannot be modified
    with pytest.raises(AttributeError, match="immutable"):
        secret._text = "whsec_" + base64.b64encode(b"y" * 32).decode()

    # And copying yields the same immutable value rather than going through pickling
    assert copy.copy(secret) is secret
    assert copy.deepcopy({"s": secret})["s"] is secret


# --- MasterKey -------------------------------------------------------------------------


def test_master_key_never_appears_when_printed() -> None:
    # Given a master key
    key = MasterKey.generate()

    # When it is rendered in every usual way
    renderings = _renderings(key)

    # Then only its key id shows, never the key bytes in any common encoding
    for rendered in renderings:
        assert key.key_id in rendered
        for spelling in _key_spellings(key.reveal()):
            assert spelling not in rendered
    with pytest.raises(TypeError, match="must not be serialised"):
        pickle.dumps(key)


def test_key_id_is_the_sha256_prefix_of_the_key() -> None:
    # Given a known key
    key = MasterKey(bytes(32))

    # When / Then its id is the first 8 hex chars of SHA-256 of 32 zero bytes
    assert key.key_id == "66687aad"


@posix_only
def test_load_generates_a_private_key_file_then_reuses_it(tmp_path: Path) -> None:
    # Given no master key configured and a data directory that does not exist yet
    data_dir = tmp_path / "data"

    # When the key is loaded twice
    first = MasterKey.load(key=None, key_file=None, data_dir=data_dir)
    second = MasterKey.load(key=None, key_file=None, data_dir=data_dir)

    # Then a 0600 key file was generated in a private data dir, and the same key comes back
    key_file = data_dir / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    assert second == first
    assert base64.b64decode(key_file.read_text()) == first.reveal()
    # And no temporary file is left behind next to it
    assert [p.name for p in data_dir.iterdir()] == ["master.key"]


@posix_only
def test_load_reads_a_private_key_file(tmp_path: Path) -> None:
    # Given a 0600 key file holding urlsafe base64 without padding
    raw = bytes([0xFB] * 32)
    key_file = tmp_path / "master.key"
    key_file.write_text(base64.urlsafe_b64encode(raw).decode().rstrip("=") + "\n")
    key_file.chmod(0o600)

    # When the key is loaded from it
    key = MasterKey.load(key=None, key_file=key_file, data_dir=tmp_path / "unused")

    # Then it holds those bytes, and the default key file was not created
    assert key.reveal() == raw
    assert not (tmp_path / "unused").exists()


@posix_only
def test_load_refuses_a_key_file_readable_by_others(tmp_path: Path) -> None:
    # Given a valid key file that is world-readable
    key_file = tmp_path / "master.key"
    key_file.write_text(MasterKey.generate().encode())
    key_file.chmod(0o644)

    # When / Then loading refuses it and says how to fix it
    with pytest.raises(MasterKeyError, match="chmod 600"):
        MasterKey.load(key=None, key_file=key_file, data_dir=tmp_path)


def test_load_refuses_a_missing_key_file(tmp_path: Path) -> None:
    # Given a configured key file that does not exist
    missing = tmp_path / "nope.key"

    # When / Then loading fails instead of silently generating a different key
    with pytest.raises(MasterKeyError, match="does not exist"):
        MasterKey.load(key=None, key_file=missing, data_dir=tmp_path)
    assert not (tmp_path / "master.key").exists()


@pytest.mark.parametrize(
    "alphabet",
    [base64.b64encode, base64.urlsafe_b64encode],
    ids=["standard", "urlsafe"],
)
def test_load_accepts_a_configured_key_in_either_base64_alphabet(
    alphabet: Callable[[bytes], bytes], tmp_path: Path
) -> None:
    # Given 32 bytes whose encodings differ between the two alphabets
    raw = bytes([0xFB, 0xFF] * 16)
    text = alphabet(raw).decode()

    # When WEBROUND_MASTER_KEY holds it
    key = MasterKey.load(key=text, key_file=None, data_dir=tmp_path)

    # Then the key is those bytes and no key file was generated
    assert key.reveal() == raw
    assert not (tmp_path / "master.key").exists()


@pytest.mark.parametrize(
    "value",
    [
        "not-a-key-at-all-%%%",
        base64.b64encode(b"k" * 31).decode(),  # one byte short
        base64.b64encode(b"k" * 33).decode(),  # one byte long
        "",
    ],
)
def test_load_refuses_a_malformed_configured_key_without_echoing_it(
    value: str, tmp_path: Path
) -> None:
    # Given a malformed WEBROUND_MASTER_KEY value
    # When the key is loaded
    with pytest.raises(MasterKeyError, match="WEBROUND_MASTER_KEY must be base64") as excinfo:
        MasterKey.load(key=value, key_file=None, data_dir=tmp_path)

    # Then the message does not contain the value, nor does any chained error
    if value:
        assert value not in _full_traceback(excinfo.value)


# --- SecretBox -------------------------------------------------------------------------


def test_seal_then_open_returns_the_secret() -> None:
    # Given a box and a secret
    box = SecretBox(MasterKey.generate())
    secret = SigningSecret.generate()

    # When it is sealed for a webhook and opened for the same webhook
    opened = box.open(box.seal(secret, context="wh_1"), context="wh_1")

    # Then the very same secret comes back
    assert opened.reveal() == secret.reveal()


def test_sealed_text_reveals_nothing_about_the_secret() -> None:
    # Given a box and a secret
    master_key = MasterKey.generate()
    secret = SigningSecret.generate()

    # When it is sealed
    sealed = SecretBox(master_key).seal(secret, context="wh_1")

    # Then the sealed text names the version and master key but contains no secret material
    version, key_id, _ = sealed.split(":")
    assert (version, key_id) == ("v1", master_key.key_id)
    assert secret.reveal() not in sealed
    for spelling in _key_spellings(secret.key()):
        assert spelling not in sealed


def test_two_seals_of_the_same_secret_differ() -> None:
    # Given a box and a secret
    box = SecretBox(MasterKey.generate())
    secret = SigningSecret.generate()

    # When it is sealed twice for the same context
    first, second = box.seal(secret, context="wh_1"), box.seal(secret, context="wh_1")

    # Then the ciphertexts differ (a fresh random nonce each time), and both open
    assert first != second
    assert box.open(first, context="wh_1") == box.open(second, context="wh_1") == secret


def test_opening_with_another_master_key_fails() -> None:
    # Given a secret sealed under one master key
    sealed = SecretBox(MasterKey.generate()).seal(SigningSecret.generate(), context="wh_1")

    # When / Then a box with another master key refuses it, naming the key ids only
    with pytest.raises(SecretUnsealError, match="sealed under master key"):
        SecretBox(MasterKey.generate()).open(sealed, context="wh_1")


def test_opening_with_another_key_under_a_forged_key_id_fails() -> None:
    # Given a secret sealed under one key, relabelled with the id of another key
    other = MasterKey.generate()
    sealed = SecretBox(MasterKey.generate()).seal(SigningSecret.generate(), context="wh_1")
    version, _, payload = sealed.split(":")
    forged = f"{version}:{other.key_id}:{payload}"

    # When / Then authentication still fails
    with pytest.raises(SecretUnsealError, match="failed authentication"):
        SecretBox(other).open(forged, context="wh_1")


def test_opening_for_another_context_fails() -> None:
    # Given a secret sealed for one webhook
    box = SecretBox(MasterKey.generate())
    sealed = box.seal(SigningSecret.generate(), context="wh_1")

    # When / Then it cannot be opened as another webhook's secret
    with pytest.raises(SecretUnsealError, match="failed authentication"):
        box.open(sealed, context="wh_2")


@pytest.mark.parametrize("position", [0, 5, 11, 12, 20, -17, -1])
def test_a_flipped_byte_fails(position: int) -> None:
    # Given a sealed secret with one byte flipped in nonce, ciphertext or tag
    box = SecretBox(MasterKey.generate())
    secret = SigningSecret.generate()
    sealed = box.seal(secret, context="wh_1")
    version, key_id, payload = sealed.split(":")
    blob = bytearray(base64.urlsafe_b64decode(payload))
    blob[position] ^= 0x01
    tampered = f"{version}:{key_id}:{base64.urlsafe_b64encode(bytes(blob)).decode()}"

    # When / Then opening it fails without leaking the secret
    with pytest.raises(SecretUnsealError) as excinfo:
        box.open(tampered, context="wh_1")
    assert secret.reveal() not in str(excinfo.value)


@pytest.mark.parametrize(
    "sealed",
    ["", "garbage", "v2:00000000:AAAA", "v1:{key_id}:***", "v1:{key_id}:AAAA"],
)
def test_malformed_sealed_text_fails(sealed: str) -> None:
    # Given text that is not a well-formed sealed secret
    master_key = MasterKey.generate()

    # When / Then opening it raises the unseal error, not a decoding error
    with pytest.raises(SecretUnsealError):
        SecretBox(master_key).open(sealed.format(key_id=master_key.key_id), context="wh_1")
