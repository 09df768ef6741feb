"""The public API: everything a plugin or an adapter may use, in one import.

``from bot_core.api import Plugin, on_customer_message, Context, HANDLED`` is the supported way in; the
modules these names come from are relaydesk's inside and may change. Adapters find the protocols the
outbox calls (:class:`Channel`, :class:`Workspace` and the optional ones), the errors they raise
(:class:`RetryAfter`, :class:`TemporaryFailure`, :class:`Undeliverable`) and :class:`NotAccepting`,
which ``services.inbound`` raises while relaydesk shuts down (answer 503: the platform retries).
A plugin's key-value store is ``self.services.store(scope)`` (or ``ctx.state`` in a handler).
Channels report what became of a message they sent with :class:`DeliveryStatus` through
``services.inbound``; a :class:`Delivery` says what it is (``kind``) and may name a :class:`TemplateRef`.
Adapters' helpers are here too: supervised receiving loops (:class:`ReceiveLoop`), signed downloads
(:class:`DownloadPolicy`, :func:`download_headers`, :func:`stream`), name cleaning, the customer's
transcript for channels that show history, and for adapter commands :func:`load_config` and
:func:`desk_database`. ``tests/test_import_rule.py`` checks that ``bridge/`` and ``plugins/`` import
nothing else of ``bot_core`` (nor ``storage``).
Plugins that write first read customers with :func:`find_customer`, :func:`get_customer` and
:func:`all_customers`.
"""

from bot_core.adapters import (
    WINDOW_ATTRIBUTE_SUFFIX,
    AwaitingCustomer,
    Channel,
    ChannelCapabilities,
    ConversationView,
    CustomerCard,
    Delivery,
    DeliveryError,
    DeliveryStateChannel,
    DeliveryStatusWorkspace,
    IdentityView,
    Inbound,
    InboundEvent,
    InvitingWorkspace,
    MentioningWorkspace,
    MessageView,
    NotAccepting,
    OpsImageWorkspace,
    OpsWorkspace,
    PostedRef,
    PresenceWorkspace,
    RetryAfter,
    RoomRef,
    SentRef,
    TemplateRef,
    TemporaryFailure,
    TypingChannel,
    TypingWorkspace,
    Undeliverable,
    Workspace,
)
from bot_core.analytics import (
    Figures,
    LiveFigures,
    RoomLink,
    ServiceReport,
    day_bounds,
    fmt_duration,
    fmt_value,
    live_figures,
    service_report,
)
from bot_core.choices import Choice, numbered, picked
from bot_core.config import ConfigError, DeskConfig, load_config
from bot_core.consent import ConsentInfo, is_stop
from bot_core.context import Context, StateStore
from bot_core.customers import (
    CustomerRecord,
    DeliveryInfo,
    IdentityRef,
    all_customers,
    deliveries,
    find_customer,
    get_customer,
)
from bot_core.downloads import CHUNK_BYTES, DownloadPolicy, download_headers, stream
from bot_core.events import (
    AgentCommand,
    AgentMessage,
    Attachment,
    ConversationEvent,
    CustomerMessage,
    DeliveryStatus,
    DeliveryStatusValue,
    LifecycleKind,
    ScheduledFire,
    utcnow,
)
from bot_core.locales import LOCALE, TIMEZONE, valid_timezone
from bot_core.maintenance import desk_database, workspace_rooms
from bot_core.names import clean_display_name, clean_file_name
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
from bot_core.receiving import ReceiveLoop
from bot_core.transcript import TranscriptEntry, customer_transcript

__all__ = [
    "CHUNK_BYTES",
    "HANDLED",
    "LOCALE",
    "TIMEZONE",
    "WINDOW_ATTRIBUTE_SUFFIX",
    "AgentCommand",
    "AgentMessage",
    "Attachment",
    "AwaitingCustomer",
    "Channel",
    "ChannelCapabilities",
    "Choice",
    "ConfigError",
    "ConsentInfo",
    "Context",
    "ConversationEvent",
    "ConversationView",
    "CustomerCard",
    "CustomerMessage",
    "CustomerRecord",
    "Delivery",
    "DeliveryError",
    "DeliveryInfo",
    "DeliveryStateChannel",
    "DeliveryStatus",
    "DeliveryStatusValue",
    "DeliveryStatusWorkspace",
    "DeskConfig",
    "DownloadPolicy",
    "EmptyConfig",
    "Figures",
    "Handled",
    "IdentityRef",
    "IdentityView",
    "Inbound",
    "InboundEvent",
    "InvitingWorkspace",
    "LifecycleKind",
    "LiveFigures",
    "MentioningWorkspace",
    "MessageView",
    "NotAccepting",
    "OpsImageWorkspace",
    "OpsWorkspace",
    "PeriodicJobError",
    "PeriodicSpec",
    "Plugin",
    "PluginKind",
    "PluginServices",
    "PostedRef",
    "PresenceWorkspace",
    "ReceiveLoop",
    "RetryAfter",
    "RoomLink",
    "RoomRef",
    "ScheduledFire",
    "SentRef",
    "ServiceReport",
    "StateStore",
    "TemplateRef",
    "TemporaryFailure",
    "TranscriptEntry",
    "TypingChannel",
    "TypingWorkspace",
    "Undeliverable",
    "Workspace",
    "all_customers",
    "clean_display_name",
    "clean_file_name",
    "customer_transcript",
    "day_bounds",
    "deliveries",
    "desk_database",
    "download_headers",
    "find_customer",
    "fmt_duration",
    "fmt_value",
    "get_customer",
    "is_stop",
    "live_figures",
    "load_config",
    "numbered",
    "on_agent_message",
    "on_command",
    "on_conversation_event",
    "on_customer_message",
    "on_schedule",
    "periodic_spec",
    "picked",
    "route",
    "service_report",
    "stream",
    "utcnow",
    "valid_timezone",
    "workspace_rooms",
]
