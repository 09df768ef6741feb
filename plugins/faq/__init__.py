"""FAQ auto-answer: answers routine questions from a knowledge base and hands over the rest (see plugin.py)."""

from plugins.faq.plugin import FaqConfig, FaqPlugin

__all__ = ["FaqConfig", "FaqPlugin"]
