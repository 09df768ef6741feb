"""Outreach templates: a text per language with ``{{variables}}``, and per-channel variants.

A template has a text per language (``en``, ``zh``, ...) and, per channel instance, either another text
(``sms: {text: {en: ...}}``, shorter) or the name of a template the platform approved beforehand
(``whatsapp: {template: order_shipped, variables: [first_name, order_id]}``): outside WhatsApp's
24-hour window only such templates may be sent. The customer's locale picks the language (``zh-CN`` →
``zh``), else the plugin's default language.

Rendering never sends a gap: a variable that the customer's record and the event's data do not give
(or give empty) makes :func:`render` raise :class:`MissingVariables` naming every one missing, so a
"Hi ," never leaves. ``{{link.NAME}}`` inserts the template's link ``NAME`` (tracked, see
:mod:`plugins.outreach.links`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot_core.api import CustomerRecord

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)\s*\}\}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


class ChannelVariant(BaseModel):
    """A template's form on one channel: its own texts, or an approved platform template."""

    model_config = ConfigDict(extra="forbid")
    text: dict[str, str] = Field(default_factory=dict)  # language -> text, replacing the template's
    template: str | None = None  # the platform's approved template (WhatsApp) used for this channel
    variables: list[str] = Field(default_factory=list)  # the approved template's parameters, in order

    @model_validator(mode="after")
    def _one_form(self) -> ChannelVariant:
        if self.variables and not self.template:
            raise ValueError("variables: are the parameters of an approved template: set template: too")
        if not self.text and not self.template:
            raise ValueError("give text: (per language) or template: (an approved template's name)")
        return self


class Template(BaseModel):
    """One outreach message: texts per language, optional channel variants and links."""

    model_config = ConfigDict(extra="forbid")
    topic: Literal["service", "marketing"] = "service"
    text: dict[str, str]  # language -> text with {{variables}}
    channels: dict[str, ChannelVariant] = Field(default_factory=dict)
    links: dict[str, str] = Field(default_factory=dict)  # name -> URL, written {{link.name}}

    @field_validator("text")
    @classmethod
    def _some_text(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("a template needs a text in at least one language")
        for language, text in value.items():
            if not text.strip():
                raise ValueError(f"the {language} text is empty")
        return value

    @field_validator("links")
    @classmethod
    def _http_links(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"link {name!r} must be an http(s) URL, not {url!r}")
        return value

    def variables(self) -> set[str]:
        """Every variable any of its texts uses (links excluded)."""
        texts = list(self.text.values()) + [t for v in self.channels.values() for t in v.text.values()]
        found = {m for t in texts for m in _VARIABLE.findall(t) if not m.startswith("link.")}
        return found | {name for v in self.channels.values() for name in v.variables}


@dataclass(frozen=True)
class TemplateChoice:
    """An approved platform template with its language and parameters (issue 19's ``TemplateRef``)."""

    name: str
    language: str
    variables: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rendered:
    """A template made concrete for one customer on one channel."""

    template: str
    language: str
    channel: str
    text: str  # what the customer reads (also the room's copy when an approved template is sent)
    approved: TemplateChoice | None = None  # set when the channel gets an approved template


class MissingVariables(ValueError):
    """A template could not be filled in: these variables have no value. Nothing is sent."""

    def __init__(self, template: str, missing: list[str]) -> None:
        self.template = template
        self.missing = sorted(set(missing))
        super().__init__(f"template '{template}': no value for {', '.join(self.missing)}")


class UnknownTemplate(LookupError):
    """No template of that name is configured."""


def pick_language(available: Mapping[str, str] | list[str], locale: str | None, default: str) -> str:
    """The language of ``available`` for ``locale``: exact (``zh-TW``), then its language (``zh``), else
    ``default`` when available, else the first."""
    languages = list(available)
    if locale:
        if locale in languages:
            return locale
        base = locale.split("-")[0].lower()
        if base in languages:
            return base
        for language in languages:
            if language.split("-")[0].lower() == base:
                return language
    return default if default in languages else languages[0]


def customer_variables(customer: CustomerRecord) -> dict[str, str]:
    """What a customer's record fills in: every attribute, ``name``, ``first_name`` and ``customer_id``.

    A name that is only a platform id (what relaydesk shows when a channel gave no name) is no name.
    """
    values = {k: v for k, v in customer.attributes.items() if isinstance(v, str)}
    name = customer.name.strip()
    if name and name not in {i.external_user_id for i in customer.identities}:
        values.setdefault("name", name)
        values.setdefault("first_name", name.split()[0])
    values["customer_id"] = str(customer.id)
    return values


def fill(text: str, values: Mapping[str, str], link: Callable[[str], str | None]) -> tuple[str, list[str]]:
    """``text`` with every ``{{variable}}`` replaced; the names that had no (or an empty) value."""
    missing: list[str] = []

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("link."):
            url = link(name[5:])
            if url is None:
                missing.append(name)
                return ""
            return url
        value = values.get(name, "")
        if not str(value).strip():
            missing.append(name)
            return ""
        return str(value)

    return _VARIABLE.sub(one, text), missing


def render(
    name: str,
    template: Template,
    customer: CustomerRecord,
    channel: str,
    variables: Mapping[str, str],
    *,
    default_language: str,
    link: Callable[[str, str], str] | None = None,
) -> Rendered:
    """Template ``name`` for ``customer`` on ``channel``, with the event's ``variables`` over the record's.

    ``link(name, url)`` makes the URL a customer gets for the template's link ``name`` (tracking);
    without it the URL itself is used. Raises :class:`MissingVariables` when a value is missing.
    """
    values = {**customer_variables(customer), **{k: str(v) for k, v in variables.items()}}

    def link_url(link_name: str) -> str | None:
        url = template.links.get(link_name)
        if url is None:
            return None
        return link(link_name, url) if link else url

    variant = template.channels.get(channel)
    texts = variant.text if variant and variant.text else template.text
    language = pick_language(texts, customer.locale, default_language)
    text, missing = fill(texts[language], values, link_url)
    approved = None
    if variant is not None and variant.template:
        missing += [v for v in variant.variables if not str(values.get(v, "")).strip()]
        approved_language = pick_language(template.text, customer.locale, default_language)
        approved = TemplateChoice(
            variant.template, approved_language, tuple(str(values.get(v, "")) for v in variant.variables)
        )
    if missing:
        raise MissingVariables(name, missing)
    return Rendered(name, language, channel, text, approved)


def check_name(value: str) -> str:
    """``value`` if it can name a template, campaign or variant (letters, digits, ``_.-``)."""
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name (letters, digits, _ . -; at most 100)")
    return value
