"""Human handoff: teams, routing, a queue that keeps the customer's place, agents, transfers, hours,
response targets and promises (plugins.yaml name ``handoff``; see :mod:`plugins.handoff.plugin`)."""

from plugins.handoff.plugin import HandoffPlugin

__all__ = ["HandoffPlugin"]
