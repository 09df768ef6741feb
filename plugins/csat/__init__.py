"""Satisfaction surveys after a conversation closes: one 1-5 question, an optional comment, counted."""

from plugins.csat.plugin import CsatPlugin

__all__ = ["CsatPlugin"]
