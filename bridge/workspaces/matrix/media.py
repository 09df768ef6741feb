"""Files between channels and Matrix rooms, for both workspace modes.

Customer files are copied into the homeserver's media repository and posted as ``m.image``/``m.file``
events. Agent files stay in the media repository; channels fetch them through a relaydesk URL signed
with HMAC (:class:`MediaLinks`), so a channel adapter never holds a Matrix token.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from typing import Any

import aiohttp
from aiohttp import web
from nio import AsyncClient

from bot_core.events import Attachment
from bot_core.names import clean_file_name
from bridge.workspaces.matrix.errors import MatrixError, check_response

MAX_MEDIA_BYTES = 50 * 1024 * 1024
MEDIA_MSGTYPES = {"m.image": "image", "m.file": "file", "m.audio": "audio", "m.video": "video"}
KIND_MSGTYPES = {"image": "m.image", "audio": "m.audio", "video": "m.video", "sticker": "m.image"}


class MediaLinks:
    """Signed relaydesk URLs for files in the media repository, and the handler that serves them.

    ``prefix`` is the route's path up to ``/{server}/{media_id}`` (e.g. ``/matrix/media``); ``key``
    signs the links and must outlive restarts, since links wait in the outbox.
    """

    def __init__(self, prefix: str, key: bytes) -> None:
        self.prefix = prefix.rstrip("/")
        self._key = key

    def signature(self, server: str, media_id: str) -> str:
        """The signature of one file's link."""
        return hmac.new(self._key, f"{server}/{media_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def link(self, base_url: str, mxc: str) -> str:
        """A signed URL on relaydesk's server (``base_url``) from which a channel fetches ``mxc``."""
        server, _, media_id = mxc.removeprefix("mxc://").partition("/")
        return (
            f"{base_url.rstrip('/')}{self.prefix}/{server}/{media_id}?sig={self.signature(server, media_id)}"
        )

    async def serve(
        self, request: web.Request, http: aiohttp.ClientSession, homeserver: str, token: str
    ) -> web.Response:
        """Answer a channel's request for a linked file: 403 on a bad signature, 404 when it is gone."""
        server, media_id = request.match_info["server"], request.match_info["media_id"]
        expected = self.signature(server, media_id)
        if not hmac.compare_digest(request.query.get("sig", "").encode(), expected.encode()):
            raise web.HTTPForbidden(text="bad or missing signature")
        url = f"{homeserver.rstrip('/')}/_matrix/client/v1/media/download/{server}/{media_id}"
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 200:
                raise web.HTTPNotFound(text="no such media")
            return web.Response(body=await resp.read(), content_type=resp.content_type)


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
