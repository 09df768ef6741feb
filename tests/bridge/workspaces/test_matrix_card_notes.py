"""The Matrix card shows the lines plugins keep on it (``ctx.card_note``), escaped like everything else."""

from __future__ import annotations

from bot_core.adapters import CustomerCard, IdentityView
from bridge.workspaces.matrix.card import card_text


def test_card_lists_the_plugins_notes() -> None:
    card = CustomerCard(
        customer_id=1,
        name="Mia",
        identities=(IdentityView("web", "v1", "Mia"),),
        tags=(),
        state="assigned",
        team="billing",
        assignee="Bob",
        notes=("Promises: #1 Wed 09 Dec 10:00 call back <b>now</b>",),
    )
    plain, rich = card_text(card)
    assert plain.splitlines()[-1] == "Promises: #1 Wed 09 Dec 10:00 call back <b>now</b>"
    assert rich.endswith("Promises: #1 Wed 09 Dec 10:00 call back &lt;b&gt;now&lt;/b&gt;")
