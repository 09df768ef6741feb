"""The webhook request check: Telegram's secret token header, then a well-formed update.

Nothing is stored for a request that fails either check: 401 for a missing or wrong
``X-Telegram-Bot-Api-Secret-Token`` (compared in constant time), 400 for a body that is not an update.
"""

from __future__ import annotations

import hmac
import json

from aiogram import Bot
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_UPDATE_BYTES = 1024 * 1024


def error(status: int, description: str) -> web.Response:
    """A JSON error answer in the Bot API's shape."""
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)


def secret_matches(request: web.Request, secret: str) -> bool:
    """Whether the request carries the webhook's secret token."""
    given = request.headers.get(SECRET_HEADER, "")
    # aiohttp keeps bytes that are not UTF-8 as lone surrogates: encoded back as they came, never a 500
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), secret.encode())


async def read_update(request: web.Request, bot: Bot) -> Update | web.Response:
    """The update in the request body, or the 400 answer explaining why there is none."""
    if request.content_length is not None and request.content_length > MAX_UPDATE_BYTES:
        return error(413, "update too large")
    try:
        data = json.loads(await request.read())
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        return error(400, "the body is not JSON")
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
        return error(400, "not a Telegram update: update_id is missing")
    try:
        return Update.model_validate(data, context={"bot": bot})
    except ValidationError as exc:
        return error(400, f"not a valid Telegram update: {exc.error_count()} problem(s)")
