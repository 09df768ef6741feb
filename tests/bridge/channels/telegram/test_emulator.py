"""The Bot API emulator behaves like Telegram where the channel depends on it (driven by aiogram itself)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)

from tests.bridge.channels.telegram.conftest import TOKEN
from tests.emulators.telegram import TelegramEmulator


@pytest.fixture
async def bot(telegram: TelegramEmulator) -> AsyncIterator[Bot]:
    """An aiogram bot pointed at the emulator through aiogram's own custom-server setting."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url))
    bot = Bot(TOKEN, session=session)
    yield bot
    await session.close()


async def test_get_updates_confirms_by_offset_and_long_polls(telegram: TelegramEmulator, bot: Bot) -> None:
    user = telegram.user(11, "Vic")
    for text in ("a", "b", "c"):
        await telegram.customer_sends(user, text)
    first, second, third = (u["update_id"] for u in telegram.all_updates)
    assert [u.update_id for u in await bot.get_updates()] == [first, second, third]
    assert [u.update_id for u in await bot.get_updates()] == [first, second, third]  # nothing confirmed yet
    assert [u.update_id for u in await bot.get_updates(offset=second)] == [second, third]
    assert [u.update_id for u in await bot.get_updates(offset=-1)] == [third]
    assert [u.update_id for u in await bot.get_updates(offset=third + 1, timeout=0)] == []
    waiting = asyncio.create_task(bot.get_updates(offset=third + 1, timeout=5))
    await telegram.wait_for(lambda: len(telegram.calls_of("getUpdates")) == 6)
    await telegram.customer_sends(user, "d")
    [update] = await asyncio.wait_for(waiting, 5)
    assert update.message is not None and update.message.text == "d"


async def test_a_newer_poll_or_a_webhook_ends_a_waiting_poll_with_409(
    telegram: TelegramEmulator, bot: Bot
) -> None:
    waiting = asyncio.create_task(bot.get_updates(timeout=5))
    await telegram.wait_for(lambda: bool(telegram.calls_of("getUpdates")))
    assert await bot.get_updates(timeout=0) == []
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await waiting
    assert await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="abc")
    with pytest.raises(TelegramConflictError, match="webhook is active"):
        await bot.get_updates()
    with pytest.raises(TelegramBadRequest, match="secret token contains unallowed characters"):
        await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="a b")
    assert await bot.delete_webhook()
    assert await bot.get_updates(timeout=0) == []


async def test_errors_have_the_bot_api_shape(telegram: TelegramEmulator, bot: Bot) -> None:
    telegram.user(12, "Wes")
    telegram.fail("sendMessage", 429, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as limited:
        await bot.send_message(12, "hi")
    assert limited.value.retry_after == 7
    telegram.fail("sendMessage", 502)
    with pytest.raises(TelegramServerError):
        await bot.send_message(12, "hi")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(13, "hi")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(12, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(12, "<b>open", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(12, telegram.store_file(b"jpeg", "photos", "jpg").file_id, caption="c" * 1025)
    telegram.block(12)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(12, "hi")
    [refused] = [c for c in telegram.calls if c.status == 429]
    assert refused.response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    wrong = Bot(
        "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        session=AiohttpSession(api=TelegramAPIServer.from_base(telegram.base_url)),
    )
    with pytest.raises(TelegramUnauthorizedError):
        await wrong.get_me()
    await wrong.session.close()


async def test_files_are_served_by_get_file_and_the_file_url(telegram: TelegramEmulator, bot: Bot) -> None:
    message = await telegram.customer_sends(
        telegram.user(14, "Xia"), document=("a.txt", b"hello", "text/plain")
    )
    info = await bot.get_file(message["document"]["file_id"])
    assert info.file_path and info.file_size == 5
    downloaded = await bot.download_file(info.file_path)
    assert downloaded is not None and downloaded.read() == b"hello"
    with pytest.raises(TelegramBadRequest, match="invalid file_id"):
        await bot.get_file("nope")
