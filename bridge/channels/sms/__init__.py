"""The SMS/MMS channel on Twilio Programmable Messaging."""

from bridge.channels.sms.channel import SmsChannel

__all__ = ["SmsChannel"]
