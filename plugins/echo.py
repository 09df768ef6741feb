"""A tiny demo feature: acknowledges a customer's first message with a configurable greeting, once."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bot_core.api import Context, CustomerMessage, Plugin, on_customer_message


class EchoPlugin(Plugin["EchoPlugin.Config"]):
    """Greets a customer once per conversation so they know their message arrived."""

    name = "echo"

    class Config(BaseModel):
        """Settings of the greeting."""

        model_config = ConfigDict(extra="forbid")
        greeting: str = "Thanks, we got your message. An agent will answer here shortly."

    @on_customer_message()
    async def greet_once(self, ctx: Context, msg: CustomerMessage) -> None:
        """Send the greeting on the first customer message of a conversation, never twice."""
        if await ctx.state.get("greeted"):
            return
        await ctx.state.set("greeted", True)
        await ctx.reply(self.config.greeting)
