"""A customer's time zone and locale: the attribute names channels use for them, and their checks.

A channel that knows them (the web widget from the browser, Telegram from the user's app language)
passes them in a message's ``attributes`` under :data:`TIMEZONE` and :data:`LOCALE`; the core checks
them and keeps them in the customer's own columns. A value that does not pass is logged and dropped.
"""

from __future__ import annotations

import logging
import re
import zoneinfo

log = logging.getLogger("relaydesk.customers")

TIMEZONE = "timezone"
LOCALE = "locale"
MAX_TIMEZONE = 64  # the column's width (customer.timezone, team.timezone)
MAX_LOCALE = 35  # the column's width (customer.locale)

# BCP 47-ish: a 2-3 letter language (or 4-8 registered), then subtags of 1-8 letters or digits
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*|[A-Za-z]{4,8}(?:-[A-Za-z0-9]{1,8})*")


def valid_timezone(name: str) -> str | None:
    """``name`` if it is an IANA time zone name this system knows (``Europe/Berlin``), else None."""
    name = name.strip()
    if not name or len(name) > MAX_TIMEZONE or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return name


def valid_locale(tag: str) -> str | None:
    """``tag`` as a BCP 47 language tag (``de-CH``; Telegram's ``pt_br`` becomes ``pt-BR``), or None."""
    tag = tag.strip().replace("_", "-")
    if not tag or len(tag) > MAX_LOCALE or not _LOCALE.fullmatch(tag):
        return None
    parts = tag.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            out.append(part.upper())  # a region
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())  # a script
        else:
            out.append(part.lower())
    return "-".join(out)


def customer_hints(attributes: dict[str, str]) -> tuple[dict[str, str], str | None, str | None]:
    """Split a message's attributes into the other attributes, a checked time zone and a checked locale.

    A time zone or locale that is given but not valid is logged and left out (None).
    """
    rest = {k: v for k, v in attributes.items() if k not in (TIMEZONE, LOCALE)}
    zone = locale = None
    if TIMEZONE in attributes:
        zone = valid_timezone(attributes[TIMEZONE])
        if zone is None:
            log.warning(
                "ignored a time zone that is not valid", extra={"timezone": attributes[TIMEZONE][:80]}
            )
    if LOCALE in attributes:
        locale = valid_locale(attributes[LOCALE])
        if locale is None:
            log.warning("ignored a locale that is not valid", extra={"locale": attributes[LOCALE][:80]})
    return rest, zone, locale
