"""The public API: everything a plugin or an adapter may use, in one import.

``from bot_core.api import Plugin, on_customer_message, Context, HANDLED`` is the supported way in; the
modules these names come from are relaydesk's inside and may change. Adapters find the protocols the
outbox calls (:class:`Channel`, :class:`Workspace` and the optional ones), the errors they raise
(:class:`RetryAfter`, :class:`TemporaryFailure`, :class:`Undeliverable`) and :class:`NotAccepting`,
which ``services.inbound`` raises while relaydesk shuts down (answer 503: the platform retries).
A plugin's key-value store is ``self.services.store(scope)`` (or ``ctx.state`` in a handler).
"""

from bot_core.adapters import (
    AwaitingCustomer,
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
from bot_core.consent import ConsentInfo
from bot_core.context import Context, StateStore
from bot_core.downloads import CHUNK_BYTES, DownloadPolicy, download_headers, stream
from bot_core.events import (
    AgentCommand,
    AgentMessage,
    Attachment,
    ConversationEvent,
    CustomerMessage,
    LifecycleKind,
)
from bot_core.names import clean_display_name, clean_file_name
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
    "CHUNK_BYTES",
    "HANDLED",
    "AgentCommand",
    "AgentMessage",
    "Attachment",
    "AwaitingCustomer",
    "Channel",
    "ChannelCapabilities",
    "ConsentInfo",
    "Context",
    "ConversationEvent",
    "ConversationView",
    "CustomerCard",
    "CustomerMessage",
    "Delivery",
    "DeliveryError",
    "DeliveryStateChannel",
    "DownloadPolicy",
    "EmptyConfig",
    "Handled",
    "IdentityView",
    "Inbound",
    "LifecycleKind",
    "MessageView",
    "NotAccepting",
    "OpsWorkspace",
    "Plugin",
    "PluginKind",
    "PluginServices",
    "PostedRef",
    "RetryAfter",
    "RoomRef",
    "SentRef",
    "StateStore",
    "TemporaryFailure",
    "TypingChannel",
    "TypingWorkspace",
    "Undeliverable",
    "Workspace",
    "clean_display_name",
    "clean_file_name",
    "download_headers",
    "on_agent_message",
    "on_command",
    "on_conversation_event",
    "on_customer_message",
    "on_schedule",
    "route",
    "stream",
]
