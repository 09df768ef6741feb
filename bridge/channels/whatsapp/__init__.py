"""The WhatsApp Business Cloud API channel."""

from bridge.channels.whatsapp.channel import WhatsAppChannel

__all__ = ["WhatsAppChannel"]
