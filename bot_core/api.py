"""The public API: everything a plugin or an adapter may use, in one import.

``from bot_core.api import Plugin, on_customer_message, Context, HANDLED`` is the supported way in; the
modules these names come from are relaydesk's inside and may change. Adapters find the protocols the
outbox calls (:class:`Channel`, :class:`Workspace` and the optional ones), the errors they raise
(:class:`RetryAfter`, :class:`TemporaryFailure`, :class:`Undeliverable`) and :class:`NotAccepting`,
which ``services.inbound`` raises while relaydesk shuts down (answer 503: the platform retries).
A plugin's key-value store is ``self.services.store(scope)`` (or ``ctx.state`` in a handler). Plugins
that write first read customers with :func:`find_customer`, :func:`get_customer` and :func:`all_customers`.
"""

from bot_core.adapters import (
    Channel,
    ChannelCapabilities,
    ConversationView,
    CustomerCard,
    Delivery,
    DeliveryError,
    DeliveryStateChannel,
    IdentityView,
    Inbound,
    MessageView,
    NotAccepting,
    OpsWorkspace,
    PostedRef,
    RetryAfter,
    RoomRef,
    SentRef,
    TemporaryFailure,
    TypingChannel,
    TypingWorkspace,
    Undeliverable,
    Workspace,
)
from bot_core.consent import ConsentInfo, is_stop
from bot_core.context import Context, StateStore
from bot_core.customers import CustomerRecord, IdentityRef, all_customers, find_customer, get_customer
from bot_core.events import (
    AgentCommand,
    AgentMessage,
    Attachment,
    ConversationEvent,
    CustomerMessage,
    LifecycleKind,
    ScheduledFire,
)
from bot_core.locales import valid_timezone
from bot_core.periodic import PeriodicJobError, PeriodicSpec, periodic_spec
from bot_core.plugin import (
    HANDLED,
    EmptyConfig,
    Handled,
    Plugin,
    PluginKind,
    PluginServices,
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
    "Channel",
    "ChannelCapabilities",
    "ConsentInfo",
    "Context",
    "ConversationEvent",
    "ConversationView",
    "CustomerCard",
    "CustomerMessage",
    "CustomerRecord",
    "Delivery",
    "DeliveryError",
    "DeliveryStateChannel",
    "EmptyConfig",
    "Handled",
    "IdentityRef",
    "IdentityView",
    "Inbound",
    "LifecycleKind",
    "MessageView",
    "NotAccepting",
    "OpsWorkspace",
    "PeriodicJobError",
    "PeriodicSpec",
    "Plugin",
    "PluginKind",
    "PluginServices",
    "PostedRef",
    "RetryAfter",
    "RoomRef",
    "ScheduledFire",
    "SentRef",
    "StateStore",
    "TemporaryFailure",
    "TypingChannel",
    "TypingWorkspace",
    "Undeliverable",
    "Workspace",
    "all_customers",
    "find_customer",
    "get_customer",
    "is_stop",
    "on_agent_message",
    "on_command",
    "on_conversation_event",
    "on_customer_message",
    "on_schedule",
    "periodic_spec",
    "route",
    "valid_timezone",
]
