"""The web chat channel: the widget, its demo page, and the visitor sessions behind them."""

from bridge.channels.web.channel import WebChannel, WebConfig

__all__ = ["WebChannel", "WebConfig"]
