"""A small bot plugin for the channel tests of choices and reactions: it offers choices without knowing
the channel, answers the one picked (pressed, or typed as a number or title), and reacts to thanks."""

from __future__ import annotations

from bot_core.api import (
    HANDLED,
    Choice,
    Context,
    CustomerMessage,
    Handled,
    Plugin,
    on_customer_message,
    picked,
)

SHORT = (
    Choice(id="order", title="Order status"),
    Choice(id="return", title="Returns"),
    Choice(id="agent", title="Talk to a person"),
)
LONG = (
    Choice(id="ship", title="When will my parcel be shipped to me?"),
    Choice(id="size", title="Which size should I order for a 40 cm wide parcel?"),
    Choice(id="pay", title="Can I pay by invoice?"),
    Choice(id="gift", title="Do you wrap gifts?"),
    Choice(id="vat", title="Are prices shown with VAT included?"),
)
OFFERED = "offered"


class AskPlugin(Plugin):
    """``menu``: three short choices; ``topics``: five long ones; ``thanks``: a 👍 on that message."""

    name = "ask"

    @on_customer_message()
    async def ask(self, ctx: Context, msg: CustomerMessage) -> Handled | None:
        """Offer, answer a pick, or react."""
        text = msg.text.strip().lower()
        if text in ("menu", "topics"):
            choices = SHORT if text == "menu" else LONG
            await ctx.state.set(OFFERED, text)
            await ctx.reply("What do you need?", choices=choices, menu="Topics")
            return HANDLED
        if text == "thanks":
            await ctx.react("👍", msg.external_message_id)
            return HANDLED
        offered = await ctx.state.get(OFFERED)
        if offered:
            choice = picked(msg.text, msg.choice, SHORT if offered == "menu" else LONG)
            if choice is not None:
                await ctx.reply(f"You picked {choice.id}")
                return HANDLED
        return None
