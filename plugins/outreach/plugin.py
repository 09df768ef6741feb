"""The ``outreach`` plugin: relaydesk writes first, by template, on triggers and campaigns.

* ``POST /outreach/events`` (bearer token, optional HMAC-SHA256 signature): the shop's backend posts an
  event (order shipped, ...); the customer is found by email, phone, the shop's id or an identity; the
  event's template is checked against the customer (a missing variable is a 422 naming it); the send is
  stored as a task keyed by the event's id before the answer, so the same event twice sends once.
* campaigns: ``campaigns:`` in plugins.yaml, each on a cron schedule in a time zone (a periodic job:
  one fire per slot across workers and restarts); every customer of the segment with marketing consent
  and under the frequency cap gets one send task of their own.
* every send (its own task, ``@on_schedule("send")``) checks consent, the cap and the variables again,
  waits for the end of the customer's quiet hours (the task is moved to their morning; the others go
  on) and for the rate limits, then writes through ``ctx.for_customer``: the message lands in the
  customer's room like any bot reply, and their answer continues that conversation. A channel variant
  naming an approved platform template goes as a template delivery (``Delivery.template``) with its text
  as the rendering: WhatsApp sends the template outside its 24-hour window and the text inside it.
* replies, opt-outs (STOP) and clicks on tracked links are counted per campaign and variant:
  ``!outreach stats <campaign>`` and ``relaydesk outreach stats``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from bot_core.api import (
    HANDLED,
    AgentCommand,
    Context,
    CustomerMessage,
    CustomerRecord,
    Handled,
    PeriodicSpec,
    Plugin,
    ScheduledFire,
    StateStore,
    TemplateRef,
    all_customers,
    deliveries,
    find_customer,
    get_customer,
    is_stop,
    on_command,
    on_customer_message,
    on_schedule,
    route,
)
from plugins.outreach import links
from plugins.outreach.config import Campaign, OutreachConfig
from plugins.outreach.metrics import OutreachMetrics
from plugins.outreach.planning import (
    SENT_PREFIX,
    Decision,
    cap_refusal,
    choose_channel,
    consent_refusal,
    quiet_until,
    reason_code,
    segment_matches,
    variant_for,
)
from plugins.outreach.templates import MissingVariables, Rendered, UnknownTemplate, render

MAX_BODY = 64 * 1024
MAX_EVENT_ID = 200
METRICS = ("sent", "skipped", "replied", "opted_out", "clicked")


@dataclass(frozen=True)
class SendRequest:
    """One message for one customer: what a send task carries in its data."""

    key: str  # the task's key (event:<id>, campaign:<name>:<slot>:<customer>)
    customer_id: int
    template: str
    topic: str
    source: str  # "event:<type>" or "campaign:<name>"
    variables: Mapping[str, str]
    channel: str | None = None
    campaign: str | None = None
    variant: str | None = None

    def data(self) -> dict[str, Any]:
        """As stored in the task."""
        return {
            "key": self.key,
            "customer_id": self.customer_id,
            "template": self.template,
            "topic": self.topic,
            "source": self.source,
            "variables": dict(self.variables),
            "channel": self.channel,
            "campaign": self.campaign,
            "variant": self.variant,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SendRequest:
        """Back from a task's data."""
        return cls(
            key=str(data["key"]),
            customer_id=int(data["customer_id"]),
            template=str(data["template"]),
            topic=str(data["topic"]),
            source=str(data["source"]),
            variables={str(k): str(v) for k, v in dict(data.get("variables") or {}).items()},
            channel=data.get("channel"),
            campaign=data.get("campaign"),
            variant=data.get("variant"),
        )


class Outreach:
    """The decisions, independent of a running desk (the plugin and the CLI's dry run share them)."""

    def __init__(self, config: OutreachConfig, plugin_name: str, public_url: str) -> None:
        self.config = config
        self.plugin_name = plugin_name
        self.public_url = public_url

    def render(self, request: SendRequest, customer: CustomerRecord, channel: str) -> Rendered:
        """The request's template for the customer on ``channel`` (raises MissingVariables, UnknownTemplate)."""
        template = self.config.templates.get(request.template)
        if template is None:
            raise UnknownTemplate(request.template)
        secret = self.config.link_secret.get_secret_value()

        def link(name: str, url: str) -> str:
            payload = {
                "s": request.campaign or request.source,
                "v": request.variant or "main",
                "u": customer.id,
                "n": name,
                "url": url,
            }
            return links.tracked_url(self.public_url, secret, payload)

        return render(
            request.template,
            template,
            customer,
            channel,
            request.variables,
            default_language=self.config.default_language,
            link=link,
        )

    async def decide(self, request: SendRequest, customer: CustomerRecord | None, now: datetime) -> Decision:
        """Send, wait (quiet hours) or skip, and why; rate limits are the sender's business."""
        base = Decision(request.customer_id, variant=request.variant, template=request.template)
        if customer is None:
            return replace(base, skip="no such customer")
        channel = choose_channel(customer, request.channel)
        if channel is None:
            where = f" on {request.channel}" if request.channel else ""
            return replace(base, skip=f"not reachable{where}")
        refusal = consent_refusal(customer, request.topic)
        if refusal:
            return replace(base, channel=channel, skip=refusal)
        if request.topic == "marketing":
            capped = await cap_refusal(self.plugin_name, customer.id, self.config.frequency_cap, now)
            if capped:
                return replace(base, channel=channel, skip=capped)
        try:
            rendered = self.render(request, customer, channel)
        except MissingVariables as exc:
            return replace(base, channel=channel, skip=str(exc))
        except UnknownTemplate:
            return replace(base, channel=channel, skip=f"no template '{request.template}'")
        zone = customer.timezone or self.config.default_timezone
        wake = quiet_until(self.config.quiet_hours, zone, now)
        return replace(
            base,
            channel=channel,
            text=rendered.text,
            wait_until=wake,
            wait_reason=f"quiet hours in {zone}" if wake else None,
        )

    async def plan_campaign(
        self, campaign: Campaign, slot: str, now: datetime
    ) -> list[tuple[CustomerRecord, SendRequest, Decision]]:
        """Every customer of the campaign's segment, with what a run at ``now`` would do for them."""
        out = []
        async for customer in all_customers():
            if not segment_matches(campaign.segment, customer, now):
                continue
            arm = variant_for(campaign, customer.id)
            request = SendRequest(
                key=f"campaign:{campaign.name}:{slot}:{customer.id}",
                customer_id=customer.id,
                template=arm.template,
                topic="marketing",
                source=f"campaign:{campaign.name}",
                variables={},
                channel=campaign.segment.channel,
                campaign=campaign.name,
                variant=arm.name,
            )
            out.append((customer, request, await self.decide(request, customer, now)))
        return out

    async def stats(self, campaign: str) -> dict[str, dict[str, int]]:
        """Per variant: how many customers were sent, skipped, replied, opted out, clicked."""
        counts: dict[str, dict[str, int]] = {}
        known = self.config.campaign(campaign)
        for arm in known.arms if known else []:
            counts[arm.name] = dict.fromkeys(METRICS, 0)
        for key, value in (await _campaign_store(self.plugin_name, campaign).items()).items():
            metric = key.split(":", 1)[0]
            if metric in METRICS:
                variant = str(value.get("variant") if isinstance(value, dict) else value)
                counts.setdefault(variant, dict.fromkeys(METRICS, 0))[metric] += 1
        return counts

    async def skip_reasons(self, campaign: str) -> dict[str, int]:
        """How many customers a campaign skipped, by reason (the reason's first words)."""
        reasons: dict[str, int] = {}
        for key, value in (await _campaign_store(self.plugin_name, campaign).items()).items():
            if key.startswith("skipped:") and isinstance(value, dict):
                reason = str(value.get("reason", "")).split("(")[0].split(":")[0].strip()
                reasons[reason] = reasons.get(reason, 0) + 1
        return reasons


def _campaign_store(plugin: str, campaign: str) -> StateStore:
    return StateStore(plugin, f"campaign:{campaign}")


class OutreachPlugin(Plugin[OutreachConfig]):
    """Templates, triggers from the shop, campaigns; consent, quiet hours, rate limits, caps, A/B counts."""

    name = "outreach"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics: OutreachMetrics | None = None

    async def start(self) -> None:
        """Register the outreach figures on ``/metrics``."""
        registry = self.services.metrics_registry
        if registry is None:
            return
        metrics = OutreachMetrics(self.instance_name, self.config, ttl=self.config.metrics_refresh)
        try:
            registry.register(metrics)
        except ValueError:  # a second outreach instance: its figures stay in !outreach stats
            self.log.warning("outreach metrics already registered by another instance")
            return
        self._metrics = metrics

    async def stop(self) -> None:
        """Unregister the figures."""
        if self._metrics is not None and self.services.metrics_registry is not None:
            self.services.metrics_registry.unregister(self._metrics)
        self._metrics = None

    async def reconfigure(self, config: OutreachConfig) -> None:
        """Take the new config (campaigns shown on ``/metrics`` included)."""
        self.config = config
        if self._metrics is not None:
            self._metrics.config = config
            self._metrics.ttl = config.metrics_refresh

    async def refresh_metrics(self) -> None:
        """Read the stored outcomes for the scrape (at most every 30 s per process)."""
        if self._metrics is not None:
            await self._metrics.refresh()

    @property
    def outreach(self) -> Outreach:
        """The decisions with the current config."""
        return Outreach(self.config, self.instance_name, self.services.public_url)

    def periodic_jobs(self) -> list[tuple[str, PeriodicSpec]]:
        """One periodic job per enabled campaign: ``campaign:<name>`` at its cron times."""
        return [(f"campaign:{c.name}", c.spec()) for c in self.config.campaigns if c.enabled]

    # -- triggers ------------------------------------------------------------------------------

    @route("POST", "/outreach/events")
    async def events(self, request: web.Request) -> web.Response:
        """An event from the shop's backend: send its template to its customer, once per event id.

        The answer says what is known at once: 202 ``accepted`` (with ``deferred_until`` when the
        customer's quiet hours hold it back), 200 ``skipped`` with the reason (the customer opted out),
        200 ``duplicate`` with the first post's outcome, or a 4xx that records nothing. What happens
        later (sent, delivered, failed, skipped at send time) is at ``GET /outreach/events/{id}``.
        """
        denied = self._unauthorised(request)
        if denied is not None:
            return denied
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, f"the body may have at most {MAX_BODY} bytes")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _error(413, f"the body may have at most {MAX_BODY} bytes")
        problem = self._signature_problem(request, raw)
        if problem:
            return _error(401, problem)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _error(400, "the body is not JSON (UTF-8)")
        parsed = _parse_event(body, self.config)
        if isinstance(parsed, web.Response):
            return parsed
        event_id, event_type, who, variables, channel = parsed
        key = f"event:{event_id}"
        outcomes = self._outcomes
        earlier = await outcomes.get(key)
        if earlier is not None:
            return _duplicate(event_id, earlier)
        customer = await _find(who, self.config.external_id_attribute)
        if customer is None:
            described = ", ".join(f"{k} {v!r}" for k, v in who.items())
            return _error(404, f"no customer with {described}", reason="unknown_customer")
        send = SendRequest(
            key=key,
            customer_id=customer.id,
            template=self.config.events[event_type],
            topic="service",
            source=f"event:{event_type}",
            variables=variables,
            channel=channel,
        )
        now = self.services.now()
        decision = await self.outreach.decide(send, customer, now)
        if decision.skip and decision.skip.startswith("template "):
            return _error(
                422,
                decision.skip,
                reason="missing_variable",
                missing=_missing(send, customer, decision, self.outreach),
            )
        if decision.skip and decision.skip.startswith("not reachable"):
            return _error(422, f"customer {customer.id} is {decision.skip}", reason="unreachable")
        outcome = {
            "event": event_id,
            "type": event_type,
            "customer": customer.id,
            "template": send.template,
            "channel": decision.channel,
            "received_at": now.isoformat(),
        }
        if decision.skip:  # opted out: known now, and the answer for this event id from now on
            outcome.update(status="skipped", reason=decision.skip, code=reason_code(decision.skip))
            if not await outcomes.add(key, outcome):
                return _duplicate(event_id, await outcomes.get(key))
            self.log.info(
                "outreach event skipped",
                extra={"event": event_id, "customer": customer.id, "reason": decision.skip},
            )
            return web.json_response(_answer(outcome, "skipped"), status=200)
        if decision.wait_until is not None:
            outcome.update(
                status="deferred",
                deferred_until=decision.wait_until.isoformat(),
                reason=decision.wait_reason,
            )
        else:
            outcome.update(status="scheduled")
        if not await self.services.schedule_once("send", send.key, data=send.data()):
            return _duplicate(event_id, await outcomes.get(key))
        # add, not set: the send may already have run on another worker and recorded what it did
        await outcomes.add(key, outcome)
        self.log.info(
            "outreach event accepted",
            extra={"event": event_id, "type": event_type, "customer": customer.id},
        )
        return web.json_response(_answer(outcome, "accepted"), status=202)

    @route("GET", "/outreach/events/{event_id}")
    async def event_outcome(self, request: web.Request) -> web.Response:
        """What became of an event posted earlier: scheduled, deferred (until when, why), skipped (why),
        sent, delivered, read or failed (the delivery as the channel reported it)."""
        denied = self._unauthorised(request)
        if denied is not None:
            return denied
        event_id = request.match_info["event_id"]
        outcome = await self._outcomes.get(f"event:{event_id}")
        if not isinstance(outcome, dict):
            return _error(404, f"no event {event_id!r} was accepted (or it was refused: nothing recorded)")
        return web.json_response(await _with_delivery(outcome))

    @property
    def _outcomes(self) -> StateStore:
        """Triggered events' outcomes, key ``event:<id>``."""
        return self.services.store("events")

    def _unauthorised(self, request: web.Request) -> web.Response | None:
        token = self.config.token.get_secret_value()
        if not token:
            return _error(404, "the outreach event route is not configured (set the outreach plugin's token)")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode()):
            return _error(401, "missing or wrong bearer token")
        return None

    def _signature_problem(self, request: web.Request, raw: bytes) -> str | None:
        secret = self.config.signing_secret.get_secret_value()
        if not secret:
            return None
        stamp = request.headers.get("X-Relaydesk-Timestamp", "")
        signature = request.headers.get("X-Relaydesk-Signature", "")
        if not stamp.isdigit() or not signature.startswith("sha256="):
            return "missing X-Relaydesk-Timestamp or X-Relaydesk-Signature (sha256=<hex>)"
        if abs(time.time() - int(stamp)) > self.config.signature_tolerance:
            return "X-Relaydesk-Timestamp is too far from now"
        expected = hmac.new(secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature[7:].encode("utf-8", "surrogateescape"), expected.encode()):
            return "the signature does not match the body"
        return None

    # -- tracked links -------------------------------------------------------------------------

    @route("GET", "/outreach/l/{token}")
    async def clicked(self, request: web.Request) -> web.Response:
        """A customer followed a tracked link: count the click for its campaign and variant, redirect."""
        payload = links.verify(self.config.link_secret.get_secret_value(), request.match_info["token"])
        url = payload.get("url") if payload else None
        if payload is None or not isinstance(url, str) or not url.startswith(("https://", "http://")):
            return _error(404, "unknown link")
        source, customer = str(payload.get("s", "")), payload.get("u")
        if self.config.campaign(source) is not None:  # links of triggered messages redirect uncounted
            await _campaign_store(self.instance_name, source).add(
                f"clicked:{customer}", {"variant": str(payload.get("v", "main"))}
            )
        raise web.HTTPFound(url)

    # -- sending -------------------------------------------------------------------------------

    @on_schedule("send")
    async def send(self, ctx: Context, fire: ScheduledFire) -> None:
        """Send one outreach message, or move it to the customer's morning, or skip it (recorded)."""
        request = SendRequest.from_data(fire.data)
        now = self.services.now()
        customer = await get_customer(request.customer_id)
        decision = await self.outreach.decide(request, customer, now)
        if decision.skip:
            await self._skipped(request, decision.skip)
            return
        if decision.wait_until is not None:
            await ctx.schedule("send", key=request.key, at=decision.wait_until, data=request.data())
            await self._deferred(request, decision.wait_until, decision.wait_reason or "quiet hours")
            self.log.info(
                "outreach waits for the end of quiet hours",
                extra={"customer": request.customer_id, "until": decision.wait_until.isoformat()},
            )
            return
        assert customer is not None and decision.channel is not None
        wait = await self._rate_wait(decision.channel)
        if wait > 0:
            later = now + timedelta(seconds=wait)
            await ctx.schedule("send", key=request.key, at=later, data=request.data())
            await self._deferred(request, later, f"rate limit on {decision.channel}")
            return
        rendered = self.outreach.render(request, customer, decision.channel)
        out = await ctx.for_customer(customer.id, channel=decision.channel, topic=request.topic)
        label = (
            f"campaign '{request.campaign}' variant {request.variant}" if request.campaign else request.source
        )
        await out.notice(f"📣 Outreach: template '{request.template}' ({label})")
        await out.state.set(
            "outreach",
            {
                "source": request.source,
                "campaign": request.campaign,
                "variant": request.variant,
                "template": request.template,
                "at": now.isoformat(),
            },
        )
        await out.customer_state.set(
            f"{SENT_PREFIX}{request.key}",
            {
                "at": now.isoformat(),
                "topic": request.topic,
                "template": request.template,
                "source": request.source,
                "approved_template": _approved(rendered),
            },
        )
        approved = rendered.approved  # WhatsApp: the channel sends it outside its 24-hour window
        template = TemplateRef(approved.name, approved.language, approved.variables) if approved else None
        delivery = await out.reply(rendered.text, topic=request.topic, template=template)
        if request.campaign:
            await _campaign_store(self.instance_name, request.campaign).add(
                f"sent:{customer.id}", {"variant": request.variant, "delivery": delivery}
            )
        else:
            await self._update_outcome(
                request,
                status="sent",
                sent_at=now.isoformat(),
                channel=decision.channel,
                delivery=delivery,
                reason=None,
                deferred_until=None,
            )

    async def _rate_wait(self, channel: str) -> float:
        limits = self.config.rate_limits
        wait = await self.services.rate_limits.take("outreach", "all", limits.per_minute)
        if wait > 0:
            return wait
        per_channel = limits.per_channel.get(channel)
        if per_channel:
            return await self.services.rate_limits.take("outreach:channel", channel, per_channel)
        return 0.0

    async def _skipped(self, request: SendRequest, reason: str) -> None:
        self.log.info(
            "outreach skipped",
            extra={"customer": request.customer_id, "source": request.source, "reason": reason},
        )
        if request.campaign:
            await _campaign_store(self.instance_name, request.campaign).add(
                f"skipped:{request.customer_id}",
                {"variant": request.variant, "reason": reason, "code": reason_code(reason)},
            )
        else:
            await self._update_outcome(
                request, status="skipped", reason=reason, code=reason_code(reason), deferred_until=None
            )

    async def _deferred(self, request: SendRequest, until: datetime, reason: str) -> None:
        if not request.campaign:
            await self._update_outcome(
                request, status="deferred", deferred_until=until.isoformat(), reason=reason
            )

    async def _update_outcome(self, request: SendRequest, **changes: Any) -> None:
        """Record what the send task did with a triggered event (read by ``GET /outreach/events/{id}``)."""
        outcome = await self._outcomes.get(request.key)
        if not isinstance(outcome, dict):  # sent before the route recorded it (or before outcomes existed)
            outcome = {
                "event": request.key.removeprefix("event:"),
                "type": request.source.removeprefix("event:"),
                "customer": request.customer_id,
                "template": request.template,
                "channel": request.channel,
            }
        outcome.update(changes)
        await self._outcomes.set(request.key, {k: v for k, v in outcome.items() if v is not None})

    # -- campaigns -----------------------------------------------------------------------------

    @on_schedule("campaign")
    async def campaign_due(self, ctx: Context, fire: ScheduledFire) -> None:
        """A campaign's slot came: one send task per customer of its segment (skips recorded)."""
        name = fire.job.split(":", 1)[1] if ":" in fire.job else ""
        campaign = self.config.campaign(name)
        if campaign is None or not campaign.enabled:
            self.log.warning("campaign fired but is no longer configured", extra={"campaign": name})
            return
        slot = str(fire.data.get("slot", ""))
        now = self.services.now()
        planned = skipped = 0
        for _customer, request, decision in await self.outreach.plan_campaign(campaign, slot, now):
            if decision.skip:
                await self._skipped(request, decision.skip)
                skipped += 1
                continue
            await ctx.schedule("send", key=request.key, at=now, data=request.data())
            planned += 1
        self.log.info(
            "campaign fired",
            extra={"campaign": name, "slot": slot, "planned": planned, "skipped": skipped},
        )

    # -- answers -------------------------------------------------------------------------------

    @on_customer_message()
    async def replied(self, ctx: Context, msg: CustomerMessage) -> None:
        """A customer wrote in a conversation an outreach went to: count the reply or opt-out once."""
        sent = await ctx.state.get("outreach")
        if not isinstance(sent, dict) or not sent.get("campaign"):
            return
        at = datetime.fromisoformat(str(sent.get("at")))
        if self.services.now() - at > timedelta(days=self.config.attribution_days):
            return
        metric = "opted_out" if is_stop(msg.text) else "replied"
        await _campaign_store(self.instance_name, str(sent["campaign"])).add(
            f"{metric}:{ctx.customer.id}", {"variant": sent.get("variant")}
        )

    @on_command("outreach", usage="stats <campaign>", help="a campaign's counts per variant")
    async def command(self, ctx: Context, cmd: AgentCommand) -> Handled:
        """``!outreach stats <campaign>``: sent, skipped, replied, opted out and clicked per variant."""
        if len(cmd.args) != 2 or cmd.args[0] != "stats":
            names = ", ".join(c.name for c in self.config.campaigns) or "none configured"
            await ctx.notice(f"Usage: !outreach stats <campaign> (campaigns: {names})")
            return HANDLED
        await ctx.notice(format_stats(cmd.args[1], await self.outreach.stats(cmd.args[1])))
        return HANDLED


def format_stats(campaign: str, counts: Mapping[str, Mapping[str, int]]) -> str:
    """A campaign's counts as lines of text, one per variant."""
    if not counts:
        return f"Campaign '{campaign}': nothing recorded."
    lines = [f"Campaign '{campaign}':"]
    for variant, row in sorted(counts.items()):
        sent = row.get("sent", 0)
        rate = f" ({100 * row.get('replied', 0) / sent:.0f} % replied)" if sent else ""
        lines.append(
            f"  {variant}: " + ", ".join(f"{m.replace('_', ' ')} {row.get(m, 0)}" for m in METRICS) + rate
        )
    return "\n".join(lines)


def _approved(rendered: Rendered) -> dict[str, Any] | None:
    if rendered.approved is None:
        return None
    return {
        "name": rendered.approved.name,
        "language": rendered.approved.language,
        "variables": list(rendered.approved.variables),
    }


def _missing(
    send: SendRequest, customer: CustomerRecord, decision: Decision, outreach: Outreach
) -> list[str]:
    try:
        outreach.render(send, customer, decision.channel or "")
    except MissingVariables as exc:
        return exc.missing
    return []


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


_INTERNAL = ("code", "delivery")


def _public(outcome: dict[str, Any]) -> dict[str, Any]:
    """An outcome as the shop reads it (without the internal delivery key)."""
    return {k: v for k, v in outcome.items() if k not in _INTERNAL}


def _answer(outcome: dict[str, Any], status: str) -> dict[str, Any]:
    """The POST's answer: what was decided at once."""
    shown = ("event", "customer", "template", "channel", "deferred_until", "reason")
    return {"status": status, **{k: outcome[k] for k in shown if outcome.get(k) is not None}}


def _duplicate(event_id: str, outcome: Any) -> web.Response:
    """The answer to an event id posted before: 200 ``duplicate`` with the first post's outcome so far."""
    answer: dict[str, Any] = {"status": "duplicate", "event": event_id}
    if isinstance(outcome, dict):
        answer["outcome"] = outcome.get("status")
        if outcome.get("reason"):
            answer["reason"] = outcome["reason"]
    return web.json_response(answer, status=200)


async def _with_delivery(outcome: dict[str, Any]) -> dict[str, Any]:
    """The outcome, its status made the delivery's once the message went out (delivered, read, failed)."""
    shown = _public(outcome)
    key = outcome.get("delivery")
    if outcome.get("status") == "sent" and isinstance(key, str):
        info = (await deliveries([key])).get(key)
        if info is not None:
            shown["status"] = "sent" if info.status == "pending" else info.status
            if info.status == "failed":
                shown["error"] = info.error or "the channel reported a failure"
    return shown


_WHO = ("email", "phone", "external_id")


def _parse_event(
    body: Any, config: OutreachConfig
) -> tuple[str, str, dict[str, str], dict[str, str], str | None] | web.Response:
    """(event id, type, who, variables, channel) from a request body, or the 4xx answer saying what is wrong."""
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    unknown = set(body) - {"id", "type", "customer", "variables", "channel"}
    if unknown:
        return _error(400, f"unknown fields: {', '.join(sorted(unknown))}")
    event_id, event_type = body.get("id"), body.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID or not event_id.isprintable():
        return _error(400, f"id must be a string of 1 to {MAX_EVENT_ID} printable characters")
    if not isinstance(event_type, str) or event_type not in config.events:
        known = ", ".join(sorted(config.events)) or "none configured"
        return _error(422, f"unknown event type {event_type!r} (known: {known})")
    who = body.get("customer")
    if not isinstance(who, dict) or not who:
        return _error(400, "customer must be an object: email, phone, external_id, or channel and user")
    found: dict[str, str] = {}
    for key, value in who.items():
        if key not in (*_WHO, "channel", "user") or not isinstance(value, str) or not value.strip():
            return _error(
                400, f"customer.{key}: expected one of email, phone, external_id, channel+user as strings"
            )
        found[key] = value.strip()
    identity = {"channel", "user"} <= set(found)
    if (len(found) != 1 or set(found) - set(_WHO)) and not (identity and len(found) == 2):
        return _error(400, "customer: give exactly one of email, phone, external_id, or channel and user")
    if "phone" in found and not (found["phone"].startswith("+") and found["phone"][1:].isdigit()):
        return _error(400, "customer.phone must be in E.164 form (+4915112345678)")
    variables = body.get("variables", {})
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool)
        for k, v in variables.items()
    ):
        return _error(400, "variables must be an object of names to strings or numbers")
    channel = body.get("channel")
    if channel is not None and (not isinstance(channel, str) or not channel):
        return _error(400, "channel must be a channel instance name")
    return event_id, event_type, found, {k: str(v) for k, v in variables.items()}, channel


async def _find(who: Mapping[str, str], external_id_attribute: str) -> CustomerRecord | None:
    if "channel" in who:
        return await find_customer(channel=who["channel"], external_user_id=who["user"])
    if "email" in who:
        return await find_customer(email=who["email"])
    if "phone" in who:
        return await find_customer(phone=who["phone"])
    return await find_customer(attribute=(external_id_attribute, who["external_id"]))
