"""Files between channels and Matrix rooms, for both workspace modes.

Customer files are copied into the homeserver's media repository and posted as ``m.image``/``m.file``
events. Agent files stay in the media repository; channels fetch them through a relaydesk URL signed
with HMAC (:class:`MediaLinks`), so a channel adapter never holds a Matrix token. The link expires and
names the room the file was posted in; the file is streamed with the download headers of
:mod:`bot_core.downloads` (an agent's HTML or SVG is an attachment in a sandbox, never a page).
"""

from __future__ import annotations

import io
from typing import Any

import aiohttp
from aiohttp import web
from nio import AsyncClient

from bot_core.api import CHUNK_BYTES, Attachment, DownloadPolicy, clean_file_name, download_headers, stream
from bridge.workspaces.matrix.errors import MatrixError, check_response

MAX_MEDIA_BYTES = 50 * 1024 * 1024
MEDIA_MSGTYPES = {"m.image": "image", "m.file": "file", "m.audio": "audio", "m.video": "video"}
KIND_MSGTYPES = {"image": "m.image", "audio": "m.audio", "video": "m.video", "sticker": "m.image"}


class MediaLinks:
    """Signed relaydesk URLs for files in the media repository, and the handler that serves them.

    ``prefix`` is the route's path up to ``/{server}/{media_id}`` (e.g. ``/matrix/media``); ``key``
    signs the links and must outlive restarts, since links wait in the outbox; ``policy`` is the
    desk's download policy (link lifetime, downloads per address).
    """

    def __init__(self, prefix: str, key: bytes, policy: DownloadPolicy) -> None:
        self.prefix = prefix.rstrip("/")
        self.signer = policy.signer(key)
        self._policy = policy

    def link(self, base_url: str, mxc: str, room_id: str = "", *, expires_at: float | None = None) -> str:
        """A signed URL on relaydesk's server (``base_url``) from which a channel fetches ``mxc``
        (posted in ``room_id``), valid until ``expires_at`` (default: the policy's lifetime)."""
        server, _, media_id = mxc.removeprefix("mxc://").partition("/")
        query = self.signer.query(f"{server}/{media_id}", room_id, expires_at=expires_at)
        return f"{base_url.rstrip('/')}{self.prefix}/{server}/{media_id}?{query}"

    async def serve(
        self, request: web.Request, http: aiohttp.ClientSession, homeserver: str, token: str
    ) -> web.StreamResponse:
        """Stream a linked file to a channel: 403 on a bad signature, 410 once expired, 429 over the
        rate, 404 when the homeserver does not have it."""
        server, media_id = request.match_info["server"], request.match_info["media_id"]
        scope = self.signer.check(f"{server}/{media_id}", request.query)
        await self._policy.admit(request, "matrix-media", scope)
        url = f"{homeserver.rstrip('/')}/_matrix/client/v1/media/download/{server}/{media_id}"
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 200:
                raise web.HTTPNotFound(text="no such media")
            disposition = resp.content_disposition
            name = clean_file_name(disposition.filename if disposition else None, fallback=media_id)
            # a body aiohttp decompresses has another length than the homeserver announced
            size = None if "Content-Encoding" in resp.headers else resp.content_length
            headers = download_headers(resp.content_type, name)
            return await stream(request, resp.content.iter_chunked(CHUNK_BYTES), headers, size)


async def upload_from(
    http: aiohttp.ClientSession, client: AsyncClient, url: str, name: str, mime: str | None = None
) -> str:
    """Copy a file the channel serves at ``url`` into the media repository, as ``client``; its mxc URI."""
    async with http.get(url) as resp:
        if resp.status != 200:
            raise MatrixError(f"fetching {name} from the channel: HTTP {resp.status}")
        data = await resp.content.read(MAX_MEDIA_BYTES + 1)
        if len(data) > MAX_MEDIA_BYTES:
            raise MatrixError(f"{name} is larger than {MAX_MEDIA_BYTES} bytes")
        content_type = mime or resp.content_type or "application/octet-stream"
    upload, _keys = await client.upload(
        io.BytesIO(data), content_type=content_type, filename=name, filesize=len(data)
    )
    return str(check_response(upload, f"upload {name}").content_uri)


def attachment_content(attachment: Attachment, mxc: str, body: str | None = None) -> dict[str, Any]:
    """The ``m.room.message`` content showing an uploaded attachment (``body`` defaults to its name)."""
    info: dict[str, Any] = {}
    if attachment.mime_type:
        info["mimetype"] = attachment.mime_type
    if attachment.size:
        info["size"] = attachment.size
    name = clean_file_name(attachment.name, fallback=attachment.kind)
    return {
        "msgtype": KIND_MSGTYPES.get(attachment.kind, "m.file"),
        "body": body or name,
        "filename": name,
        "url": mxc,
        "info": info,
    }


def agent_attachment(content: dict[str, Any], link: str) -> Attachment | None:
    """The attachment an agent's media event carries (``link`` is its signed URL), or None."""
    kind = MEDIA_MSGTYPES.get(str(content.get("msgtype")))
    if kind is None or not content.get("url"):
        return None
    info = content.get("info") or {}
    return Attachment(
        kind=kind,  # type: ignore[arg-type]
        url=link,
        mime_type=info.get("mimetype"),
        name=clean_file_name(str(content.get("filename") or content.get("body") or "file")),
        size=info.get("size"),
    )
