"""relaydesk engine: events, plugin API, pipeline, relay, outbox and the command line."""

from bot_core.events import (
    AgentCommand,
    AgentMessage,
    Attachment,
    ConversationEvent,
    CustomerMessage,
    LifecycleKind,
)
from bot_core.plugin import (
    HANDLED,
    Handled,
    Plugin,
    PluginKind,
    on_agent_message,
    on_command,
    on_conversation_event,
    on_customer_message,
    on_schedule,
    route,
)

__all__ = [
    "HANDLED",
    "AgentCommand",
    "AgentMessage",
    "Attachment",
    "ConversationEvent",
    "CustomerMessage",
    "Handled",
    "LifecycleKind",
    "Plugin",
    "PluginKind",
    "on_agent_message",
    "on_command",
    "on_conversation_event",
    "on_customer_message",
    "on_schedule",
    "route",
]
