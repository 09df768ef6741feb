"""A local Telegram Bot API server for tests: real HTTP on loopback, the Bot API's shapes and errors.

aiogram is pointed at it with its own setting (``TelegramAPIServer.from_base(emulator.base_url)``).
What it does, as the real API does it:

- ``/bot<token>/<method>`` with query, urlencoded, multipart or JSON parameters; a wrong token is 401.
- ``getUpdates`` with real offset semantics (an update is confirmed, never returned again, once a call
  asks for a greater offset; a negative offset forgets all but the last updates), long polling, 409 while a
  webhook is set, and 409 "terminated by other getUpdates request" for a poll superseded by a newer one.
- A gateway in front of the API that fails: :meth:`TelegramEmulator.gateway_down` makes a method answer
  an HTML error page (not JSON, as nginx or a cloud proxy does) until :meth:`TelegramEmulator.gateway_up`.
- ``setWebhook``/``deleteWebhook``/``getWebhookInfo``: while a webhook is set, pending updates are POSTed
  to it in order with ``X-Telegram-Bot-Api-Secret-Token``; one that is not answered 2xx is retried.
- ``sendMessage``, ``sendPhoto``, ``sendDocument`` (multipart upload, ``attach://``, file_id or URL),
  ``sendChatAction``, ``editMessageText``, ``deleteMessage``, ``getFile`` and ``/file/bot<token>/<path>``;
  inline keyboards (``reply_markup``, ``callback_data`` of 1-64 bytes or ``BUTTON_DATA_INVALID``), a tap
  as a ``callback_query`` update (:meth:`TelegramEmulator.customer_presses`), ``answerCallbackQuery``
  (once per query) and ``editMessageReplyMarkup``.
  HTML text is parsed as strictly as Telegram does (:mod:`tests.emulators.telegram_html`) and the limits
  are checked (4096 characters of text, 1024 of caption, after entity parsing).
- Errors in the Bot API's shape (``{"ok": false, "error_code", "description", "parameters"}``): blocked
  users (403, until unblocked), unknown chats (400), switches to inject 429 with ``retry_after``, 4xx/5xx
  or a hang, and an outage (every call of some methods answered 5xx until the test ends it).

Deviation: a webhook URL may be plain http on loopback (the real API wants a public HTTPS URL).
Everything received is recorded in :attr:`TelegramEmulator.calls` (tests wait on it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.emulators.server import LoopbackServer
from tests.emulators.telegram_html import EntityParseError, parse_html, utf16_len

MAX_TEXT = 4096
MAX_CAPTION = 1024
SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
CHAT_ACTIONS = {
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
}

GATEWAY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class ApiError(Exception):
    """An error answer of the Bot API."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        """The JSON the Bot API answers."""
        data: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            data["parameters"] = self.parameters
        return data


def bad_request(what: str) -> ApiError:
    """A 400 with Telegram's "Bad Request: ..." description."""
    return ApiError(400, f"Bad Request: {what}")


@dataclass
class Call:
    """One request the emulator received, with what it answered."""

    method: str
    params: dict[str, Any]
    files: dict[str, StoredUpload]
    status: int = 0
    response: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class StoredUpload:
    """A file part of a multipart request."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class StoredFile:
    """A file the emulator holds (a customer's upload or one the bot sent)."""

    file_id: str
    file_unique_id: str
    path: str
    data: bytes


@dataclass
class Injected:
    """A failure waiting for the next call of ``method``."""

    method: str
    error: ApiError | None  # None: hang
    times: int
    after: int = 0  # calls of ``method`` to answer normally first


@dataclass
class WebhookDelivery:
    """One POST of an update to the webhook and its answer (0: no answer)."""

    update_id: int
    status: int
    secret_header: str | None


class TelegramEmulator(LoopbackServer):
    """The Bot API of one bot (``token``), with its customers, chats, files and updates."""

    def __init__(self, token: str, *, bot_id: int = 7000001, username: str = "relaydesk_test_bot") -> None:
        super().__init__()
        self.token = token
        self.bot_user = {"id": bot_id, "is_bot": True, "first_name": "Relaydesk", "username": username}
        self.users: dict[int, dict[str, Any]] = {}
        self.blocked: set[int] = set()
        self.calls: list[Call] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.updates: list[dict[str, Any]] = []  # pending (unconfirmed) updates, in order
        self.all_updates: list[dict[str, Any]] = []  # every update ever queued
        self.files: dict[str, StoredFile] = {}
        self.chat_messages: dict[int, dict[int, dict[str, Any]]] = {}  # chat id -> message id -> message
        self.open_queries: set[str] = set()  # callback queries not answered yet
        self.answered_queries: list[str] = []
        self.webhook: dict[str, Any] | None = None
        self.webhook_retry_delay = 0.1
        self.duplicate_webhook_deliveries = False  # POST each update twice (a lost acknowledgement)
        self.failing_downloads = False  # /file/bot<token>/... answers 500
        self._update_ids = itertools.count(100001)
        self._file_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._injected: list[Injected] = []
        self._outage: tuple[ApiError, frozenset[str] | None] | None = None
        self._poll_generation = 0
        self._stopping = False  # set by stop(): a long poll answers at once instead of holding the shutdown
        self._webhook_task: asyncio.Task[None] | None = None
        self._gateway_down: dict[str, int] = {}  # lowercased method -> HTTP status of the HTML page

    # -- server ---------------------------------------------------------------------------------

    max_body = 60 * 1024**2

    def routes(self, app: web.Application) -> None:
        """The Bot API and its file downloads (:attr:`base_url` is what aiogram's
        ``TelegramAPIServer.from_base`` takes)."""
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)

    async def stop(self) -> None:
        """Stop the webhook sender and the server; long polls still waiting answer at once, as the server's
        shutdown would otherwise wait them out (up to their ``timeout``) while a desk still polls."""
        self._hang.set()
        self._stopping = True
        await self._notify()
        await self._stop_webhook_sender()
        await self._close()

    def calls_seen(self) -> list[Any]:
        """(method, status) of every call."""
        return [(c.method, c.status) for c in self.calls]

    # -- switches ---------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        code: int,
        description: str | None = None,
        *,
        times: int = 1,
        retry_after: int | None = None,
        after: int = 0,
    ) -> None:
        """Answer ``times`` calls of ``method`` with an error (429 carries ``retry_after``), once ``after``
        more calls of it were answered normally."""
        default = {
            400: "Bad Request: chat not found",
            403: "Forbidden: bot was blocked by the user",
            409: "Conflict: terminated by other getUpdates request",
            429: f"Too Many Requests: retry after {retry_after or 1}",
            500: "Internal Server Error",
            502: "Bad Gateway",
        }
        params = {"retry_after": retry_after or 1} if code == 429 else None
        error = ApiError(code, description or default.get(code, "Error"), params)
        self._injected.append(Injected(method, error, times, after))

    def hang(self, method: str, *, times: int = 1) -> None:
        """Never answer the next ``times`` calls of ``method`` (until the emulator stops)."""
        self._injected.append(Injected(method, None, times))

    def gateway_down(self, method: str, status: int = 502) -> None:
        """Answer every call of ``method`` with a proxy's HTML error page until :meth:`gateway_up`."""
        self._gateway_down[method.lower()] = status

    def gateway_up(self, method: str) -> None:
        """``method`` is answered by the API again."""
        self._gateway_down.pop(method.lower(), None)

    def block(self, user_id: int) -> None:
        """The user blocked the bot: sending to them answers 403."""
        self.blocked.add(user_id)

    def unblock(self, user_id: int) -> None:
        """The user unblocked the bot: sending to them works again."""
        self.blocked.discard(user_id)

    def outage(self, code: int = 502, *, methods: tuple[str, ...] | None = None) -> None:
        """Answer every call of ``methods`` (all methods if None) with ``code`` until :meth:`restore`."""
        descriptions = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        error = ApiError(code, descriptions.get(code, "Error"))
        self._outage = (error, frozenset(m.lower() for m in methods) if methods else None)

    def restore(self) -> None:
        """End the outage started by :meth:`outage`."""
        self._outage = None

    def _take_injected(self, method: str) -> Injected | None:
        for item in self._injected:
            if item.method.lower() == method.lower():
                if item.after > 0:
                    item.after -= 1
                    return None
                item.times -= 1
                if item.times <= 0:
                    self._injected.remove(item)
                return item
        return None

    # -- the customer's side ----------------------------------------------------------------------

    def user(
        self,
        user_id: int,
        first_name: str,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str = "en",
    ) -> dict[str, Any]:
        """A Telegram user who can write to the bot."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        user["language_code"] = language_code
        self.users[user_id] = user
        return user

    def _chat(self, user: dict[str, Any]) -> dict[str, Any]:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        for key in ("last_name", "username"):
            if key in user:
                chat[key] = user[key]
        return chat

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def store_file(self, data: bytes, folder: str, extension: str) -> StoredFile:
        """Keep ``data`` as a Telegram file; returns it with its ids and path."""
        number = next(self._file_ids)
        stored = StoredFile(
            file_id=f"AgAC{number:06d}{secrets.token_hex(8)}",
            file_unique_id=f"AQAD{number:06d}",
            path=f"{folder}/file_{number}.{extension}",
            data=data,
        )
        self.files[stored.file_id] = stored
        return stored

    def _photo_sizes(self, stored: StoredFile) -> list[dict[str, Any]]:
        thumb = self.store_file(stored.data[: max(1, len(stored.data) // 4)], "photos", "jpg")
        return [
            {
                "file_id": thumb.file_id,
                "file_unique_id": thumb.file_unique_id,
                "width": 90,
                "height": 90,
                "file_size": len(thumb.data),
            },
            {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "width": 800,
                "height": 800,
                "file_size": len(stored.data),
            },
        ]

    async def customer_sends(
        self,
        user: dict[str, Any],
        text: str | None = None,
        *,
        photo: bytes | None = None,
        document: tuple[str, bytes, str] | None = None,
        voice: bytes | None = None,
        sticker: bytes | None = None,
        caption: str | None = None,
        reply_to: int | None = None,
    ) -> dict[str, Any]:
        """The user writes to the bot; queues the ``message`` update and returns the message."""
        chat = self._chat(user)
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat["id"]),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
        }
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                command = text.split(maxsplit=1)[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
        if photo is not None:
            message["photo"] = self._photo_sizes(self.store_file(photo, "photos", "jpg"))
        if document is not None:
            name, data, mime = document
            stored = self.store_file(data, "documents", name.rsplit(".", 1)[-1] if "." in name else "bin")
            message["document"] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "file_name": name,
                "mime_type": mime,
                "file_size": len(data),
            }
        if voice is not None:
            stored = self.store_file(voice, "voice", "oga")
            message["voice"] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "duration": 2,
                "mime_type": "audio/ogg",
                "file_size": len(voice),
            }
        if sticker is not None:
            stored = self.store_file(sticker, "stickers", "webp")
            message["sticker"] = {
                "file_id": stored.file_id,
                "file_unique_id": stored.file_unique_id,
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": "👍",
                "file_size": len(sticker),
            }
        if caption is not None:
            message["caption"] = caption
        if reply_to is not None:
            original = self.chat_messages.get(chat["id"], {}).get(reply_to)
            if original is None:
                raise ValueError(f"no message {reply_to} in chat {chat['id']}")
            message["reply_to_message"] = original
        self.chat_messages.setdefault(chat["id"], {})[message["message_id"]] = message
        await self.add_update({"message": message})
        return message

    async def customer_edits(self, user: dict[str, Any], message_id: int, text: str) -> dict[str, Any]:
        """The user edits their message ``message_id``; queues the ``edited_message`` update."""
        original = self.chat_messages[user["id"]][message_id]
        edited = {**original, "edit_date": int(time.time()) + 1}
        if "text" in original:
            edited["text"] = text
        else:
            edited["caption"] = text
        self.chat_messages[user["id"]][message_id] = edited
        await self.add_update({"edited_message": edited})
        return edited

    async def add_update(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue an update (``payload`` holds its one field, e.g. ``{"message": ...}``)."""
        update = {"update_id": next(self._update_ids), **payload}
        self.updates.append(update)
        self.all_updates.append(update)
        await self._notify()
        return update

    # -- what the bot did -------------------------------------------------------------------------

    def bot_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The messages the bot sent to ``chat_id`` that the chat still shows (after edits and deletions)."""
        return [
            m
            for m in self.chat_messages.get(chat_id, {}).values()
            if m.get("from", {}).get("id") == self.bot_user["id"]
        ]

    def texts_to(self, chat_id: int) -> list[str]:
        """The visible text (or caption) of every message the bot sent to ``chat_id``, in order."""
        return [m.get("text", m.get("caption", "")) for m in self.bot_messages(chat_id)]

    def calls_of(self, method: str) -> list[Call]:
        """The recorded calls of ``method`` (answered or not)."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    # -- HTTP -------------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, StoredUpload]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, StoredUpload] = {}
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                params.update(await request.json())
            elif ctype == "multipart/form-data":
                reader = await request.multipart()
                async for part in reader:
                    if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                        continue
                    if part.filename is not None:
                        files[part.name] = StoredUpload(
                            part.filename,
                            part.headers.get("Content-Type", "application/octet-stream"),
                            bytes(await part.read()),
                        )
                    else:
                        params[part.name] = await part.text()
            else:
                params.update(dict(await request.post()))
        return params, files

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, files = await self._params(request)
        call = Call(method, params, files)
        self.calls.append(call)
        gateway_status = self._gateway_down.get(method.lower())
        if gateway_status is not None:
            call.status = gateway_status
            await self._notify()
            return web.Response(text=GATEWAY_PAGE, status=gateway_status, content_type="text/html")
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            if self._outage is not None and (self._outage[1] is None or method.lower() in self._outage[1]):
                raise self._outage[0]
            injected = self._take_injected(method)
            if injected is not None:
                if injected.error is None:
                    await self._hang.wait()
                    raise ApiError(500, "Internal Server Error: emulator stopped")
                raise injected.error
            handler = getattr(self, f"_m_{method.lower()}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = await handler(params, files)
            body: dict[str, Any] = {"ok": True, "result": result}
            status = 200
        except ApiError as exc:
            body, status = exc.body(), exc.code
        call.status, call.response = status, body
        await self._notify()
        return web.json_response(body, status=status)

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        if self.failing_downloads:
            return web.Response(status=500, text="Internal Server Error")
        path = request.match_info["path"]
        stored = next((f for f in self.files.values() if f.path == path), None)
        if stored is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    # -- parameter helpers ------------------------------------------------------------------------

    @staticmethod
    def _json_param(params: dict[str, Any], name: str) -> Any:
        value = params.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {name} JSON object") from None
        return value

    @staticmethod
    def _int_param(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
        value = params.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad_request(f"invalid {name} specified") from None

    def _chat_id(self, params: dict[str, Any]) -> int:
        chat_id = self._int_param(params, "chat_id")
        if chat_id is None:
            raise bad_request("chat_id is empty")
        if chat_id not in self.users:
            raise bad_request("chat not found")
        if chat_id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _formatted(self, params: dict[str, Any], name: str, limit: int) -> tuple[str, list[dict[str, Any]]]:
        raw = str(params.get(name) or "")
        mode = str(params.get("parse_mode") or "")
        if mode.lower() == "html":
            try:
                text, entities = parse_html(raw)
            except EntityParseError as exc:
                raise bad_request(str(exc)) from None
        elif mode:
            raise bad_request(f"unsupported parse_mode {mode!r} in this emulator")
        else:
            text, entities = raw, self._json_param(params, "entities") or []
        if utf16_len(text) > limit:
            raise bad_request("message is too long" if name == "text" else "message caption is too long")
        return text, entities

    def _reply_to(self, params: dict[str, Any], chat_id: int) -> dict[str, Any] | None:
        reply = self._json_param(params, "reply_parameters")
        message_id = (reply or {}).get("message_id") or self._int_param(params, "reply_to_message_id")
        if not message_id:
            return None
        original = self.chat_messages.get(chat_id, {}).get(int(message_id))
        if original is None:
            raise bad_request("message to be replied not found")
        return original

    def _outgoing(self, chat_id: int, params: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat_id),
            "from": self.bot_user,
            "chat": self._chat(self.users[chat_id]),
            "date": int(time.time()),
        }
        reply = self._reply_to(params, chat_id)
        if reply is not None:
            message["reply_to_message"] = reply
        return message

    async def _input_file(
        self, params: dict[str, Any], files: dict[str, StoredUpload], name: str, folder: str
    ) -> tuple[StoredFile, str | None, str | None]:
        """The file given as ``name``: an upload (direct or ``attach://``), a file_id, or a URL to fetch."""
        value = params.get(name)
        upload = files.get(name)
        if isinstance(value, str) and value.startswith("attach://"):
            upload = files.get(value.removeprefix("attach://"))
            if upload is None:
                raise bad_request(f"wrong file identifier/HTTP URL specified: {value} is not attached")
        if upload is not None:
            ext = upload.filename.rsplit(".", 1)[-1] if "." in upload.filename else "bin"
            return self.store_file(upload.data, folder, ext), upload.filename, upload.content_type
        if not value:
            raise bad_request(f"there is no {name} in the request")
        value = str(value)
        if value in self.files:
            return self.files[value], None, None
        if value.startswith(("http://", "https://")):
            assert self._http is not None
            try:
                async with self._http.get(value) as resp:
                    if resp.status != 200:
                        raise bad_request("failed to get HTTP URL content")
                    data = await resp.read()
                    ctype = resp.content_type
            except aiohttp.ClientError:
                raise bad_request("failed to get HTTP URL content") from None
            return self.store_file(data, folder, "bin"), value.rsplit("/", 1)[-1].split("?")[0], ctype
        raise bad_request("wrong file identifier/HTTP URL specified")

    def _with_caption(self, message: dict[str, Any], params: dict[str, Any]) -> None:
        caption, entities = self._formatted(params, "caption", MAX_CAPTION)
        if caption:
            message["caption"] = caption
            if entities:
                message["caption_entities"] = entities

    # -- methods ----------------------------------------------------------------------------------

    async def _m_getme(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False}

    async def _m_getupdates(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        if self.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
            )
        offset = self._int_param(params, "offset", 0) or 0
        limit = max(1, min(100, self._int_param(params, "limit", 100) or 100))
        timeout = max(0, self._int_param(params, "timeout", 0) or 0)
        allowed = self._json_param(params, "allowed_updates")
        if offset > 0:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        elif offset < 0:
            self.updates = self.updates[offset:]
        await self._notify()  # confirmations are visible to waiting tests at once
        self._poll_generation += 1
        generation = self._poll_generation

        def ready() -> list[dict[str, Any]]:
            return [u for u in self.updates if not allowed or any(k in u for k in allowed)][:limit]

        if not ready() and timeout and not self._stopping:
            async with self._changed:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(
                            lambda: bool(ready()) or self._poll_generation != generation or self._stopping
                        ),
                        timeout,
                    )
                except TimeoutError:
                    pass
        if self._poll_generation != generation:
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
            )
        return ready()

    async def _m_setwebhook(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        url = str(params.get("url") or "")
        if not url:
            return await self._m_deletewebhook(params, files)
        if not url.startswith(("http://127.0.0.1", "http://localhost", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not SECRET_TOKEN.match(str(secret)):
            raise bad_request("secret token contains unallowed characters")
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.updates.clear()
        await self._stop_webhook_sender()
        self.webhook = {
            "url": url,
            "secret_token": secret,
            "allowed_updates": self._json_param(params, "allowed_updates"),
            "last_error_message": None,
        }
        self._poll_generation += 1  # a poll still waiting is cut off, as Telegram does
        await self._notify()
        self._webhook_task = asyncio.create_task(self._send_webhooks(), name="telegram-emulator-webhook")
        return True

    async def _m_deletewebhook(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        await self._stop_webhook_sender()
        self.webhook = None
        if str(params.get("drop_pending_updates", "")).lower() == "true":
            self.updates.clear()
        return True

    async def _m_getwebhookinfo(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        info: dict[str, Any] = {
            "url": self.webhook["url"] if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.updates),
        }
        if self.webhook and self.webhook.get("last_error_message"):
            info["last_error_message"] = self.webhook["last_error_message"]
            info["last_error_date"] = int(time.time())
        return info

    def _markup(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """An ``inline_keyboard`` reply markup, checked as Telegram does: rows of buttons with a text and
        ``callback_data`` of 1-64 bytes (or a ``url``); other markups are kept as given."""
        markup = self._json_param(params, "reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            return markup
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        for row in keyboard:
            for button in row:
                if not isinstance(button, dict) or not str(button.get("text") or "").strip():
                    raise bad_request("text buttons are unallowed in the inline keyboard")
                data = button.get("callback_data")
                if data is None and not button.get("url"):
                    raise bad_request(
                        "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
                    )
                if data is not None and not 1 <= len(str(data).encode()) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
        return markup

    async def customer_presses(self, user: dict[str, Any], message_id: int, text: str) -> dict[str, Any]:
        """The user taps the inline button ``text`` of the bot's message ``message_id``: queues the
        ``callback_query`` update Telegram sends (with the message and the button's ``callback_data``)."""
        message = self.chat_messages[user["id"]][message_id]
        buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
        button = next(b for b in buttons if b["text"] == text)
        query = {
            "id": str(next(self._update_ids) * 1000 + 7),
            "from": user,
            "message": message,
            "chat_instance": f"-{user['id']}00",
            "data": button["callback_data"],
        }
        self.open_queries.add(query["id"])
        await self.add_update({"callback_query": query})
        return query

    async def _m_answercallbackquery(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self.open_queries:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        self.open_queries.discard(query_id)
        self.answered_queries.append(query_id)
        return True

    async def _m_editmessagereplymarkup(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        chat_id = self._chat_id(params)
        message_id = self._int_param(params, "message_id")
        original = self.chat_messages.get(chat_id, {}).get(message_id or 0)
        if original is None or original.get("from", {}).get("id") != self.bot_user["id"]:
            raise bad_request("message to edit not found")
        markup = self._markup(params)
        if markup == original.get("reply_markup"):
            raise bad_request(
                "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"
            )
        edited = {**original, "edit_date": int(time.time())}
        edited.pop("reply_markup", None)
        if markup and markup.get("inline_keyboard"):
            edited["reply_markup"] = markup
        self.chat_messages[chat_id][original["message_id"]] = edited
        return edited

    async def _m_sendmessage(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        chat_id = self._chat_id(params)
        text, entities = self._formatted(params, "text", MAX_TEXT)
        if not text.strip():
            raise bad_request("message text is empty")
        markup = self._markup(params)
        message = self._outgoing(chat_id, params)
        message["text"] = text
        if entities:
            message["entities"] = entities
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        self.chat_messages.setdefault(chat_id, {})[message["message_id"]] = message
        return message

    async def _m_sendphoto(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        chat_id = self._chat_id(params)
        stored, _name, _ctype = await self._input_file(params, files, "photo", "photos")
        message = self._outgoing(chat_id, params)
        message["photo"] = self._photo_sizes(stored)
        self._with_caption(message, params)
        self.chat_messages.setdefault(chat_id, {})[message["message_id"]] = message
        return message

    async def _m_senddocument(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        chat_id = self._chat_id(params)
        stored, name, ctype = await self._input_file(params, files, "document", "documents")
        message = self._outgoing(chat_id, params)
        message["document"] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": name or stored.path.rsplit("/", 1)[-1],
            "mime_type": ctype or "application/octet-stream",
            "file_size": len(stored.data),
        }
        self._with_caption(message, params)
        self.chat_messages.setdefault(chat_id, {})[message["message_id"]] = message
        return message

    async def _m_sendchataction(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        self._chat_id(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    async def _m_editmessagetext(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        chat_id = self._chat_id(params)
        message_id = self._int_param(params, "message_id")
        original = self.chat_messages.get(chat_id, {}).get(message_id or 0)
        if original is None or original.get("from", {}).get("id") != self.bot_user["id"]:
            raise bad_request("message to edit not found")
        if "text" not in original:
            raise bad_request("there is no text in the message to edit")
        text, entities = self._formatted(params, "text", MAX_TEXT)
        if text == original["text"] and entities == original.get("entities", []):
            raise bad_request(
                "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"
            )
        edited = {**original, "text": text, "edit_date": int(time.time())}
        edited.pop("entities", None)
        if entities:
            edited["entities"] = entities
        self.chat_messages[chat_id][original["message_id"]] = edited
        return edited

    async def _m_deletemessage(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        chat_id = self._chat_id(params)
        message_id = self._int_param(params, "message_id")
        if self.chat_messages.get(chat_id, {}).pop(message_id or 0, None) is None:
            raise bad_request("message to delete not found")
        return True

    async def _m_getfile(self, params: dict[str, Any], files: dict[str, StoredUpload]) -> Any:
        stored = self.files.get(str(params.get("file_id") or ""))
        if stored is None:
            raise bad_request("invalid file_id")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data),
            "file_path": stored.path,
        }

    # -- webhook sender ---------------------------------------------------------------------------

    async def _stop_webhook_sender(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _send_webhooks(self) -> None:
        """POST pending updates to the webhook one at a time, in order; retry one that is not acknowledged."""
        assert self._http is not None and self.webhook is not None
        hook = self.webhook
        headers = {"Content-Type": "application/json"}
        if hook["secret_token"]:
            headers["X-Telegram-Bot-Api-Secret-Token"] = str(hook["secret_token"])
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self.updates))
            update = self.updates[0]
            allowed = hook.get("allowed_updates")
            if allowed and not any(k in update for k in allowed):
                self.updates.pop(0)
                continue
            status = await self._post_update(hook["url"], update, headers)
            if 200 <= status < 300 and self.duplicate_webhook_deliveries:
                await self._post_update(hook["url"], update, headers)
            if 200 <= status < 300:
                if self.updates and self.updates[0] is update:
                    self.updates.pop(0)
                hook["last_error_message"] = None
                await self._notify()
            else:
                hook["last_error_message"] = (
                    f"Wrong response from the webhook: {status}" if status else "Connection failed"
                )
                await self._notify()
                await asyncio.sleep(self.webhook_retry_delay)

    async def _post_update(self, url: str, update: dict[str, Any], headers: dict[str, str]) -> int:
        assert self._http is not None
        status = 0
        try:
            async with self._http.post(
                url, data=json.dumps(update), headers=headers, timeout=aiohttp.ClientTimeout(total=10)
            ) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.webhook_deliveries.append(
            WebhookDelivery(update["update_id"], status, headers.get("X-Telegram-Bot-Api-Secret-Token"))
        )
        return status
