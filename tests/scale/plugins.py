"""Plugins the fault tests' workers load (by dotted path in plugins.yaml): a channel and a workspace that talk
real HTTP to the test's recorder, as platforms would, and a feature plugin that schedules keyed jobs.

* :class:`RecorderChannel` sends each delivery to the recorder, which drops a key it saw (a platform with
  idempotent sends); its route takes customer messages and answers 200 only once ``services.inbound``
  returned (503 while the worker shuts down, 500 on any other failure: the platform retries).
* :class:`RecorderWorkspace` makes rooms on the recorder, adopted by a creation key (the customer), as the
  Matrix workspace finds a room it made before a crash; posts carry the outbox's key and show once. Its
  route takes agent messages.
* :class:`Pinger` schedules job ``ping`` under a key when a customer message contains ``#sched <key>``,
  and posts the notice ``fired <key>`` when it fires.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from bot_core.api import (
    HANDLED,
    AgentMessage,
    ChannelCapabilities,
    Context,
    ConversationView,
    CustomerCard,
    CustomerMessage,
    Delivery,
    EmptyConfig,
    MessageView,
    NotAccepting,
    Plugin,
    PluginKind,
    PostedRef,
    RoomRef,
    SentRef,
    TemporaryFailure,
    on_customer_message,
    on_schedule,
    route,
)
from bot_core.events import ScheduledFire


class RecorderConfig(BaseModel):
    """Where the test's recorder listens."""

    model_config = ConfigDict(extra="forbid")
    recorder: str


class _RecorderClient:
    """One HTTP session to the recorder; a failed call is a temporary failure (the outbox retries it)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self._http: aiohttp.ClientSession | None = None

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._http.post(f"{self.base}{path}", json=body) as resp:
                if resp.status != 200:
                    raise TemporaryFailure(f"recorder answered {resp.status}")
                data: dict[str, Any] = await resp.json()
                return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TemporaryFailure(f"recorder unreachable: {exc!r}") from exc

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


async def _accept(services_inbound: Any, event: CustomerMessage | AgentMessage) -> web.Response:
    """Store the event, then answer as a platform expects (non-200: it retries the same event later)."""
    try:
        await services_inbound(event)
    except NotAccepting:
        return web.json_response({"error": "shutting down"}, status=503)
    return web.json_response({"ok": True})


class RecorderChannel(Plugin[RecorderConfig]):
    """A customer-side channel whose platform is the test's recorder."""

    name = "recorder_channel"
    kind = PluginKind.CHANNEL
    capabilities = ChannelCapabilities()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = _RecorderClient(self.config.recorder)

    async def send(self, delivery: Delivery) -> SentRef:
        """Hand the delivery to the recorder under its idempotency key."""
        sent = await self.client.call(
            "/send",
            {"user": delivery.external_user_id, "text": delivery.text, "key": delivery.idempotency_key},
        )
        return SentRef(str(sent["id"]))

    @route("POST", "/test/fault-channel/inbound")
    async def inbound(self, request: web.Request) -> web.Response:
        """A customer's message, as the platform's webhook: ``{"user", "text", "id"}``."""
        data = await request.json()
        event = CustomerMessage(
            channel=self.instance_name,
            external_user_id=str(data["user"]),
            external_message_id=str(data["id"]),
            text=str(data["text"]),
        )
        return await _accept(self.services.inbound, event)

    async def stop(self) -> None:
        """Close the HTTP session."""
        await self.client.close()


class RecorderWorkspace(Plugin[RecorderConfig]):
    """An agent-side workspace whose rooms live on the test's recorder."""

    name = "recorder_workspace"
    kind = PluginKind.WORKSPACE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = _RecorderClient(self.config.recorder)

    async def ensure_room(self, conversation: ConversationView) -> RoomRef:
        """The customer's room: made on the recorder, or the one made before (adopted by its creation key)."""
        room = await self.client.call(
            "/room", {"key": f"customer:{conversation.customer_id}", "user": conversation.external_user_id}
        )
        return RoomRef(self.instance_name, str(room["room"]))

    async def _post(self, room: RoomRef, kind: str, text: str, key: str) -> PostedRef:
        posted = await self.client.call(
            "/post", {"room": room.room_id, "kind": kind, "text": text, "key": key}
        )
        return PostedRef(str(posted["id"]))

    async def post_as_customer(self, room: RoomRef, message: MessageView) -> PostedRef:
        """Show the customer's message in the room."""
        return await self._post(room, "customer", message.text, message.idempotency_key)

    async def notice(self, room: RoomRef, text: str, key: str = "") -> PostedRef:
        """Post a bot notice in the room."""
        return await self._post(room, "notice", text, key)

    async def show_card(self, room: RoomRef, card: CustomerCard, key: str = "") -> None:
        """Show the customer's card in the room."""
        await self._post(room, "card", card.state, key)

    @route("POST", "/test/fault-workspace/inbound")
    async def inbound(self, request: web.Request) -> web.Response:
        """An agent's message in a room, as the workspace's sync would see it: ``{"room", "text", "id"}``."""
        data = await request.json()
        event = AgentMessage(
            workspace=self.instance_name,
            room_id=str(data["room"]),
            external_message_id=str(data["id"]),
            agent_id="@agent",
            agent_name="Agent",
            text=str(data["text"]),
        )
        return await _accept(self.services.inbound, event)

    async def stop(self) -> None:
        """Close the HTTP session."""
        await self.client.close()


class Pinger(Plugin[EmptyConfig]):
    """Schedules ``ping`` under the key ``#sched <key>`` names; the fire posts ``fired <key>`` in the room."""

    name = "pinger"

    @on_customer_message(matches=r"#sched ")
    async def arm(self, ctx: Context, msg: CustomerMessage) -> object:
        """Schedule the ping a little later (the conversation's next messages overtake it)."""
        key = msg.text.split("#sched ", 1)[1].split()[0]
        await ctx.schedule("ping", key=key, delay=0.2, data={"key": key})
        return HANDLED

    @on_schedule("ping")
    async def ping(self, ctx: Context, fire: ScheduledFire) -> None:
        """Say in the room that the job ran."""
        await ctx.notice(f"fired {fire.data['key']}")
