"""Reading an HTML form post (``application/x-www-form-urlencoded``) without extra parsers."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request

MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"

Form = ImmutableMultiDict[str, str]
EMPTY: Form = ImmutableMultiDict()


class FormError(Exception):
    """A post that is no form we could have served: the status says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_form(request: Request) -> Form:
    """The posted fields, refusing bodies over 64 KiB and anything but a urlencoded form."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 9 or int(declared) > MAX_FORM_BYTES):
        raise FormError(413, "the form is too large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise FormError(413, "the form is too large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if raw and media_type != FORM_TYPE:
        raise FormError(415, "this page accepts only its own HTML forms")
    text = raw.decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=500)
    except ValueError:
        raise FormError(413, "the form has too many fields") from None
    return ImmutableMultiDict(pairs)
