"""Reading the widget's upload form (multipart: ``client_id``, optional ``text``, then ``file``) as a stream.

Every size is checked while the bytes arrive, so a client cannot make relaydesk buffer more than the
limits whatever it sends: a text field beyond :data:`MAX_FIELD_BYTES`, a file beyond the upload limit,
or more than :data:`MAX_PARTS` parts is refused at once. The file goes to disk chunk by chunk (a
:class:`~bridge.channels.web.uploads.PartialFile`), removed again if the form is refused. A body aiohttp cannot parse as multipart is a
:class:`~bridge.channels.web.validation.BadInput` (400), never a server error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bridge.channels.web.uploads import FileStore, PartialFile, clean_name, too_large
from bridge.channels.web.validation import BadInput

MAX_FIELD_BYTES = 64 * 1024  # client_id and text (the text's own limit, in characters, is checked after)
MAX_PARTS = 8
CHUNK = 64 * 1024
# What aiohttp's multipart reader raises on a malformed body (it has no exception of its own for it).
_MALFORMED = (ValueError, AssertionError, RuntimeError, LookupError, HttpProcessingError)


@dataclass(frozen=True)
class UploadForm:
    """The fields of one upload, as sent (the text fields not yet checked beyond their size)."""

    client_id: str
    text: str
    name: str
    declared_type: str
    file: PartialFile


async def read_upload_form(request: web.Request, file_limit: int, store: FileStore) -> UploadForm:
    """Read the form up to its ``file`` part, the file into ``store`` (the caller commits or discards
    it); raises :class:`BadInput` or ``UploadRefused`` (413) and leaves no file behind then."""
    if (
        request.content_length is not None
        and request.content_length > file_limit + MAX_PARTS * MAX_FIELD_BYTES
    ):
        raise too_large("The file", file_limit)
    try:
        reader = await request.multipart()
    except _MALFORMED:
        raise BadInput("expected a multipart/form-data body") from None
    fields = {"client_id": "", "text": ""}
    for _ in range(MAX_PARTS):
        part = await _next(reader)
        if part is None:
            raise BadInput("no file in the upload")
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: not something the widget sends
        if part.name in fields:
            fields[part.name] = await _read_field(part)
        elif part.name == "file":
            name = clean_name(part.filename)
            partial = await asyncio.to_thread(store.begin)
            try:
                await _read_file(part, name, file_limit, partial)
            except BaseException:
                await asyncio.to_thread(partial.discard)
                raise
            declared = part.headers.get("Content-Type", "")
            return UploadForm(fields["client_id"], fields["text"], name, declared, partial)
    raise BadInput(f"too many parts in the upload (at most {MAX_PARTS})")


async def _next(reader: MultipartReader) -> object:
    try:
        return await reader.next()
    except _MALFORMED:
        raise BadInput("the multipart body is malformed") from None


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await _chunk(part):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise BadInput(f"the field {part.name} is too large", status=413)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"the field {part.name} is not valid UTF-8") from None


async def _read_file(part: BodyPartReader, name: str, limit: int, partial: PartialFile) -> None:
    size = 0
    while chunk := await _chunk(part):
        size += len(chunk)
        if size > limit:
            raise too_large(name, limit)
        await asyncio.to_thread(partial.write, chunk)
    if not size:
        raise BadInput(f"“{name}” is empty.")


async def _chunk(part: BodyPartReader) -> bytes:
    try:
        return await part.read_chunk(CHUNK)
    except _MALFORMED:
        raise BadInput("the multipart body is malformed") from None
