"""Proactive outreach: templates, triggers from the shop's backend, campaigns with consent and manners."""

from plugins.outreach.plugin import OutreachPlugin

__all__ = ["OutreachPlugin"]
