"""Stage 4 of a business day: render one campaign's treated waves into the outbox.

- :func:`check_templates` (the DAG's ``lint_templates``, before planning) compiles every template
  the enabled campaigns use (the same lint as ``huitouke templates lint``) and says which campaigns
  are broken and why; a broken campaign fails its own render task, the others go on.
- :func:`run_day` renders one campaign's treated waves of the day into the outbox (status
  ``queued``). A broken template raises :class:`~huitouke.render.TemplateError` before anything of
  that campaign is queued, and the campaign's day row records the error; other campaigns are
  separate calls (separate mapped tasks in the DAG). Messages already queued are skipped, so
  re-running queues nothing new, and a fixed template can be rendered by running the task again.
  With ``shard`` it renders only the messages of that shard's customers (one mapped task per
  campaign and shard, :mod:`huitouke.shards`); each outbox row stores its customer's bucket, by
  which delivery's shards claim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine

from huitouke.campaigns.daily import stored_plan_text
from huitouke.campaigns.playbook import Campaign, Playbook, channel_of
from huitouke.config import compose_yaml, yaml_line
from huitouke.pii import get_logger
from huitouke.render import context as ctx
from huitouke.render import persist
from huitouke.render.approved import Approvals, CompiledParams, missing_approval_error, params_json
from huitouke.render.environment import TemplateError
from huitouke.render.lint import LintProblem, approved_problems, lint_approved_sms
from huitouke.render.messages import CompiledMessage, compile_message, render_batch
from huitouke.shards import Shard, bucket_of

log = get_logger(__name__)


def shop_info(playbook: Playbook) -> ctx.ShopInfo:
    """The playbook's shop as the renderer needs it (signature, footer, currency, url)."""
    shop = playbook.shop
    return ctx.ShopInfo(
        name=shop.name,
        currency=shop.currency,
        opt_out_footer=shop.sms_opt_out_footer,
        sms_signature_brackets=shop.sms_signature_brackets,
        url=shop.url,
    )


def _templates_of(name: str, campaign: Campaign) -> list[str]:
    seen: list[str] = []
    for variant in list(campaign.variants) or [""]:
        for template in campaign.offer(name, variant).templates:
            if template not in seen:
                seen.append(template)
    return seen


def _compile(template: str, campaign: Campaign, shop: ctx.ShopInfo, root: Path | None) -> CompiledMessage:
    channel, _, message = template.partition("/")
    budget = campaign.sms_max_segments if channel == "sms" else None
    return compile_message(message, channel, shop, budget, root=root)  # type: ignore[arg-type]


def lint_campaigns(
    playbook: Playbook, root: Path | None = None, sms_provider: str | None = None
) -> dict[str, str]:
    """Enabled campaign -> the first template error that breaks it (only broken campaigns).

    Beyond the template lint, each template is rendered with what its campaign provides: a
    template that uses ``coupon`` in a campaign (or variant) without a coupon is broken. An SMS
    template's approved counterpart (``approved_sms_templates``) is checked and rendered the same
    way; with an SMS provider that sends only approved templates (``sms_provider`` ``aliyun``), an
    SMS template without one breaks its campaign.
    """
    shop = shop_info(playbook)
    approvals = Approvals.of(playbook, sms_provider)
    broken: dict[str, str] = {}
    for name, campaign in playbook.campaigns_by_priority():
        if not campaign.enabled:
            continue
        try:
            _checked_messages(name, campaign, shop, root, approvals)
        except TemplateError as exc:
            broken[name] = str(exc)
    return broken


def campaign_problems(
    playbook: Playbook,
    *,
    root: Path | None = None,
    sms_provider: str | None = None,
    where: tuple[str, str | None] = ("include/playbook.yaml", None),
    only: list[str] | None = None,
) -> list[LintProblem]:
    """:func:`lint_campaigns`, the DAG's check, as ``huitouke templates lint`` problems (rule
    ``campaign-broken``): one per broken enabled campaign, at the playbook's line of its
    templates. ``where``: the playbook's file and YAML text (for the line); ``only``: the
    campaigns sending one of these messages (``sms/coupon_wave``, ``coupon_wave``) alone."""
    file, source = where
    root_node = compose_yaml(source)
    problems = []
    for name, error in lint_campaigns(playbook, root, sms_provider).items():
        if only is not None and not any(
            _names(t, only) for t in _templates_of(name, playbook.campaigns[name])
        ):
            continue
        at = ("campaigns", name)
        line = yaml_line(root_node, (*at, "templates")) or yaml_line(root_node, at)
        message = f"the campaign will not be rendered: {error}"
        problems.append(LintProblem(file, line, f"campaigns.{name}", message, rule="campaign-broken"))
    return problems


def _names(template: str, names: list[str]) -> bool:
    """Whether a lint NAME (``sms/x``, ``x``, ``sms/x.txt.j2``) names the campaign's ``template``."""
    bare = template.partition("/")[2]
    return any(n in (template, bare) or n.startswith(f"{template}.") for n in names)


def _checked_params(
    template: str, campaign_name: str, shop: ctx.ShopInfo, root: Path | None, approvals: Approvals
) -> CompiledParams | None:
    """The approved counterpart of an SMS template compiled (None: not mapped, or not SMS);
    raises TemplateError for a parameter's first error, or a missing mapping the provider needs."""
    if channel_of(template) != "sms":
        return None
    approved = approvals.mappings.get(template)
    if approved is None:
        if approvals.required:
            raise missing_approval_error(template, str(approvals.provider), approvals.file, campaign_name)
        return None
    problems, compiled = approved_problems(template, approved, shop=shop, root=root, contexts=())
    errors = [p for p in problems if p.is_error]
    if errors or compiled is None:
        raise errors[0].to_error()
    return compiled


def _checked_messages(
    name: str, campaign: Campaign, shop: ctx.ShopInfo, root: Path | None, approvals: Approvals
) -> _Compiled:
    """Every template of the campaign compiled (with its approved parameters), and rendered once
    as the campaign gives it (see :func:`_render_as_campaign`); raises TemplateError for the
    first broken one."""
    templates = _templates_of(name, campaign)
    compiled = {t: _compile(t, campaign, shop, root) for t in templates}
    params = {t: p for t in templates if (p := _checked_params(t, name, shop, root, approvals))}
    for variant in list(campaign.variants) or [""]:
        offer = campaign.offer(name, variant)
        for template in offer.templates:
            _render_as_campaign(
                compiled[template], params.get(template), name, campaign, offer.coupon is not None
            )
    return _Compiled(compiled, params)


@dataclass(frozen=True)
class _Compiled:
    """A campaign's messages compiled, by template, and the approved SMS parameters."""

    messages: dict[str, CompiledMessage]
    params: dict[str, CompiledParams]


def _render_as_campaign(
    compiled: CompiledMessage, params: CompiledParams | None, name: str, campaign: Campaign, has_coupon: bool
) -> None:
    """Render every category variant of a message (and its approved parameters) with the sample
    context as the campaign gives it (no ``coupon`` object when the campaign has no coupon);
    raise TemplateError if it fails."""
    for group in compiled.files.variants:
        context = ctx.sample_context(
            compiled.shop,
            category_group="other" if group == "default" else group,
            waves=campaign.waves.max_waves,
            campaign=compiled.name,
            language=ctx.template_language(compiled.name),
        )
        context["campaign"] = ctx.campaign_context(name, campaign.display_name)
        if not has_coupon:
            context.pop("coupon", None)
        try:
            compiled.render(context)
            if params is not None:
                params.render(context)
        except TemplateError as exc:
            if not has_coupon and "coupon" in str(exc):
                exc.reason = (
                    f"{exc.reason} (campaign {name} gives no coupon: add a coupon to the campaign "
                    "or remove it from the template)"
                )
                exc.args = (exc.describe(),)
            raise


@dataclass(frozen=True)
class TemplateCheck:
    """What :func:`check_templates` found: the enabled campaigns, and the broken ones with why."""

    enabled: int
    broken: dict[str, str]
    mapping_errors: tuple[str, ...] = ()  # approved SMS templates mapped for no template

    @property
    def log_level(self) -> int:
        return logging.WARNING if self.broken or self.mapping_errors else logging.INFO

    def as_text(self) -> str:
        if not self.broken:
            text = f"the templates of all {self.enabled} enabled campaigns compile"
            return "\n".join([*self.mapping_errors, text])
        lines = [
            *self.mapping_errors,
            *(f"campaign {name} will not be rendered today: {error}" for name, error in self.broken.items()),
        ]
        lines.append(
            f"{len(self.broken)} of {self.enabled} enabled campaigns have a broken template "
            "(run `huitouke templates lint`)"
        )
        return "\n".join(lines)

    def as_dict(self) -> dict[str, str]:
        return dict(self.broken)


def check_templates(
    playbook: Playbook, root: Path | None = None, sms_provider: str | None = None
) -> TemplateCheck:
    """Before planning: compile every template the enabled campaigns use and say which are broken
    (``sms_provider``: ``delivery.sms.provider``, which may require approved SMS templates).

    Never fails: a broken campaign fails its own render task (:func:`run_day`); the others go on.
    An approved template mapped for no existing template is logged as an error too.
    """
    broken = lint_campaigns(playbook, root, sms_provider)
    for name, error in broken.items():
        log.error("campaign %s will not be rendered today: %s", name, error)
    unknown = tuple(
        str(p)
        for p in lint_approved_sms(Approvals.of(playbook), shop=shop_info(playbook), root=root)
        if p.rule == "approved-unknown"
    )
    for problem in unknown:
        log.error("%s", problem)
    return TemplateCheck(sum(c.enabled for c in playbook.campaigns.values()), broken, unknown)


# ----------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class RenderResult:
    campaign: str
    business_date: date
    treated: int
    messages_planned: int
    queued: int  # inserted by this call
    already_queued: int
    skipped_no_address: int
    skipped_opted_out: int
    plan_text: str = field(default="", compare=False)  # the campaign's stored plan of the day
    shard: str = ""  # the customer shard rendered ("shard 2/3"); "" for every customer

    def as_text(self) -> str:
        of = f" ({self.shard})" if self.shard else ""
        line = (
            f"Campaign {self.campaign} on {self.business_date}{of}: {self.treated:,} treated, "
            f"{self.messages_planned:,} messages planned, {self.queued:,} queued now, "
            f"{self.already_queued:,} already queued, {self.skipped_no_address:,} skipped (no address), "
            f"{self.skipped_opted_out:,} skipped (opted out since planning)"
        )
        return f"{line}\n{self.plan_text}" if self.plan_text else line

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "plan_text" and (k != "shard" or v)}
        out["business_date"] = self.business_date.isoformat()
        return out


def _cny(cents: Any) -> Decimal:
    return (Decimal(int(cents)) / 100).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class _Job:
    """One campaign's rendering of one business day."""

    name: str
    campaign: Campaign
    day: date
    compiled: dict[str, CompiledMessage]  # by template ("sms/coupon_wave")
    now: datetime
    params: dict[str, CompiledParams] = field(default_factory=dict)  # approved SMS, by template
    shard: Shard = Shard.whole()  # the customers rendered


def run_day(
    engine: Engine,
    day: date,
    campaign_name: str,
    playbook: Playbook,
    now: datetime | None = None,
    root: Path | None = None,
    sms_provider: str | None = None,
    shard: Shard | None = None,
) -> RenderResult:
    """Render and queue the campaign's messages of ``day`` (see the module docstring). An SMS
    template with an approved counterpart in the playbook stores its code and rendered parameters
    too (``template_code``, ``template_params``); ``sms_provider`` (``delivery.sms.provider``)
    says whether every SMS template must have one. ``shard``: only the messages of this shard's
    customers (default: every customer); the campaign's day row is recorded from the whole outbox
    whichever shard ends last (:func:`huitouke.render.persist.record_queued`)."""
    shard = shard or Shard.whole()
    now = now or datetime.now()
    campaign = playbook.campaigns.get(campaign_name)
    if campaign is None:
        raise ValueError(f"campaign {campaign_name!r} is not in the playbook any more")
    try:
        approvals = Approvals.of(playbook, sms_provider)
        checked = _checked_messages(campaign_name, campaign, shop_info(playbook), root, approvals)
        job = _Job(campaign_name, campaign, day, checked.messages, now, checked.params, shard)
        result = _render_and_queue(engine, job)
    except TemplateError as exc:  # nothing of this shard's messages was queued: record why
        with engine.begin() as conn:
            persist.record_failure(conn, day, campaign_name, str(exc), now, shard)
        raise
    with engine.begin() as conn:  # after the queue's commit: the count sees every shard's rows
        persist.record_queued(conn, day, campaign_name, now, shard)
    with engine.connect() as conn:
        return replace(result, plan_text=stored_plan_text(conn, day, campaign_name))


def _render_and_queue(engine: Engine, job: _Job) -> RenderResult:
    """Read the day's treated waves of the shard's customers and what their messages need,
    render, queue, in one transaction."""
    with engine.begin() as conn:
        waves = persist.read_treated_waves(conn, job.name, job.day)
        if not job.shard.is_whole:
            waves = waves[job.shard.mask(waves["customer_id"])].reset_index(drop=True)
        sends = _sends_of(waves, job.name, job.campaign)
        planned = len(sends)
        sends = _not_queued(sends, persist.read_queued_keys(conn, job.name, job.day))
        if sends.empty:
            messages, no_address, opted_out = [], 0, 0
        else:
            messages, no_address, opted_out = _render(sends, _read_customers(conn, sends, job), job)
        queued = persist.queue_messages(conn, messages)
    return RenderResult(
        campaign=job.name,
        business_date=job.day,
        treated=len(waves),
        messages_planned=planned,
        queued=queued,
        already_queued=planned - len(sends),
        skipped_no_address=no_address,
        skipped_opted_out=opted_out,
        shard=job.shard.tag(),
    )


def _sends_of(waves: pd.DataFrame, name: str, campaign: Campaign) -> pd.DataFrame:
    """One row per treated wave and channel, with the template the variant uses there."""
    if waves.empty:
        return waves.assign(channel=pd.Series([], dtype=object), template=pd.Series([], dtype=object))
    rows = waves.assign(channel=waves["channels"].str.split(",")).explode("channel", ignore_index=True)
    rows = rows[rows["channel"].astype(str).str.len() > 0].reset_index(drop=True)
    found: dict[tuple[Any, Any], str | None] = {}  # (variant, channel) -> template
    templates = []
    for key in zip(rows["variant"], rows["channel"], strict=True):
        if key not in found:
            offer = campaign.offer(name, key[0] or "")
            found[key] = next((t for t in offer.templates if channel_of(t) == key[1]), None)
        templates.append(found[key])
    rows["template"] = templates
    missing = rows["template"].isna()
    if missing.any():
        log.warning(
            "%s: %d planned message(s) have no template in the playbook any more (channel removed): skipped",
            name,
            int(missing.sum()),
        )
        rows = rows[~missing].reset_index(drop=True)
    return rows


def _not_queued(sends: pd.DataFrame, queued: set[tuple[Any, ...]]) -> pd.DataFrame:
    """The sends whose message (:data:`~huitouke.render.persist.MESSAGE_KEY`) is not in the
    outbox yet."""
    if not queued or sends.empty:
        return sends
    keys = zip(*(_values(sends[k]) for k in persist.MESSAGE_KEY), strict=True)
    return sends[[key not in queued for key in keys]].reset_index(drop=True)


# ------------------------------------------------------------------------ the messages' contexts


@dataclass(frozen=True)
class _Customers:
    """What the messages of the day's sends need about their customers, read at once.

    Everything per customer is read from column lists into dicts (a ``DataFrame.loc`` lookup per
    customer and message costs about 60 µs: minutes at a million messages)."""

    ids: list[Any]  # sorted
    profiles: dict[Any, dict[str, Any]]  # profile and state by customer (read_profiles)
    segments: dict[Any, dict[str, Any]]  # segment fields of the day by customer
    last_orders: pd.DataFrame  # read_last_orders
    coupons: pd.DataFrame  # the campaign's coupons of the day


def _read_customers(conn: Connection, sends: pd.DataFrame, job: _Job) -> _Customers:
    ids = sorted(set(sends["customer_id"]))
    return _Customers(
        ids=ids,
        profiles=_by_customer(persist.read_profiles(conn, ids)),
        segments=_by_customer(persist.read_segments(conn, ids, job.day)),
        last_orders=persist.read_last_orders(conn, ids, job.day),
        coupons=persist.read_coupons_of(conn, job.name, job.day),
    )


class _Contexts:
    """The context objects of the day's messages, each built once: per customer (customer,
    category, order), per amount (yuan), per wave; :meth:`of` puts a message's together."""

    def __init__(self, customers: _Customers, job: _Job) -> None:
        self._yuan: dict[Any, Decimal] = {}  # cents -> CNY, once per distinct amount
        self._waves: dict[int, dict[str, Any]] = {}
        self._total_waves = job.campaign.waves.max_waves
        self._campaign = ctx.campaign_context(job.name, job.campaign.display_name)
        self._customer, self._category = _customer_contexts(customers)
        self._order = self._order_contexts(customers)
        self._coupons = _coupon_terms(customers.coupons)

    def cny(self, cents: Any) -> Decimal:
        value = self._yuan.get(cents)
        if value is None:
            value = self._yuan[cents] = _cny(cents)
        return value

    def _order_contexts(self, customers: _Customers) -> dict[Any, dict[str, Any] | None]:
        """Each customer's latest paid order (None: no paid order)."""
        orders: dict[Any, dict[str, Any] | None] = dict.fromkeys(customers.ids)
        last = customers.last_orders
        for cid, order_id, business_date, amount, categories in zip(
            *(_values(last[k]) for k in ("customer_id", "order_id", "business_date", "amount_cents")),
            last["categories"].tolist(),
            strict=True,
        ):
            orders[cid] = ctx.order_context(
                str(order_id), _as_date(business_date), self.cny(amount), list(categories)
            )
        return orders

    def of(self, cid: Any, entered_on: Any, wave: int) -> tuple[dict[str, Any], str | None]:
        """The context of one message, and the code of the coupon it carries (None: none)."""
        terms = self._coupons.get((cid, entered_on, wave))
        coupon = (
            ctx.coupon_context(terms[0], self.cny(terms[1]), self.cny(terms[2]), _as_date(terms[3]))
            if terms
            else None
        )
        wave_ctx = self._waves.get(wave)
        if wave_ctx is None:
            wave_ctx = self._waves[wave] = ctx.wave_context(wave, self._total_waves)
        context = ctx.message_context(
            customer=self._customer[cid],
            coupon=coupon,
            order=self._order[cid],
            category=self._category[cid],
            campaign=self._campaign,
            wave=wave_ctx,
        )
        return context, coupon["code"] if coupon else None


def _customer_contexts(
    customers: _Customers,
) -> tuple[dict[Any, dict[str, Any]], dict[Any, dict[str, Any] | None]]:
    """Each customer's ``customer`` object (profile, state and segment of the day) and
    ``category`` object (what message_context would make of it; one per group)."""
    customer_ctx: dict[Any, dict[str, Any]] = {}
    category_ctx: dict[Any, dict[str, Any] | None] = {}
    groups: dict[str, dict[str, Any]] = {}
    for cid in customers.ids:
        row: dict[str, Any] = {"customer_id": cid}
        row.update(customers.profiles.get(cid, ()))
        row.update(customers.segments.get(cid, ()))
        customer = customer_ctx[cid] = ctx.customer_context(row)
        group = customer.get("category_group")
        if group and group not in groups:
            groups[group] = ctx.category_context(group)
        category_ctx[cid] = groups[group] if group else None
    return customer_ctx, category_ctx


def _coupon_terms(issued: pd.DataFrame) -> dict[tuple[Any, Any, int], tuple[Any, Any, Any, Any]]:
    """(customer, entry, wave) -> (code, value, minimum spend, expiry) of the issued coupons."""
    return {
        (c, e, int(w)): (code, value, min_spend, expires)
        for c, e, w, code, value, min_spend, expires in zip(
            *(_values(issued[k]) for k in ("customer_id", "entered_on", "wave", "code")),
            *(_values(issued[k]) for k in ("value_cents", "min_spend_cents", "expires_on")),
            strict=True,
        )
    }


# ------------------------------------------------------------------------------ the outbox rows


_SEND_FIELDS = ("customer_id", "entered_on", "wave", "variant", "channel", "template")


def _render(sends: pd.DataFrame, customers: _Customers, job: _Job) -> tuple[list[dict[str, Any]], int, int]:
    """The outbox rows of ``sends``, and how many were skipped for want of an address or an opt-out
    recorded since planning."""
    contexts = _Contexts(customers, job)
    by_template, no_address, opted_out = _outbox_rows(sends, customers.profiles, contexts, job)
    return _rendered(by_template, job.compiled, job.params), no_address, opted_out


def _opted_out(profile: dict[str, Any], channel: str) -> bool:
    return bool(profile["email_opt_out"] if channel == "email" else profile["sms_opt_out"])


def _address(profile: dict[str, Any] | None, channel: str) -> str | None:
    """The customer's address for the channel (stripped); None when there is none."""
    if profile is None:
        return None
    address = profile["email"] if channel == "email" else profile["phone"]
    if address is None or (isinstance(address, float) and address != address):
        return None
    return str(address).strip() or None


def _outbox_rows(
    sends: pd.DataFrame, profiles: dict[Any, dict[str, Any]], contexts: _Contexts, job: _Job
) -> tuple[dict[str, list[tuple[dict[str, Any], dict[str, Any]]]], int, int]:
    """Per template, the outbox row (without its rendered parts) and the context of each message
    to queue; and the counts skipped for want of an address, or for an opt-out since planning."""
    by_template: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    no_address = opted_out = 0
    for cid, entered_on, wave, variant, channel, template in zip(
        *(_values(sends[k]) for k in _SEND_FIELDS), strict=True
    ):
        profile = profiles.get(cid)
        if profile is not None and _opted_out(profile, channel):
            opted_out += 1
            continue
        address = _address(profile, channel)
        if address is None:
            no_address += 1
            continue
        wave = int(wave)
        context, coupon_code = contexts.of(cid, entered_on, wave)
        row = {
            "campaign": job.name,
            "customer_id": cid,
            "bucket": bucket_of(cid),
            "entered_on": entered_on,
            "wave": wave,
            "variant": variant or "",
            "channel": channel,
            "template": template,
            "business_date": job.day,
            "status": persist.QUEUED,
            "recipient": address,
            "coupon_code": coupon_code,
            "attempts": 0,
            "created_at": job.now,
        }
        by_template.setdefault(template, []).append((row, context))
    return by_template, no_address, opted_out


def _rendered(
    by_template: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]],
    compiled: dict[str, CompiledMessage],
    approved: dict[str, CompiledParams],
) -> list[dict[str, Any]]:
    """The outbox rows with their rendered parts, and the approved template's code and
    parameters where the template has one: one batch per template."""
    out: list[dict[str, Any]] = []
    for template, items in by_template.items():
        contexts = [context for _, context in items]
        rendered = render_batch(compiled[template], contexts)
        params = approved.get(template)
        codes = params.render_many(contexts) if params else [(None, None)] * len(items)
        for (row, _), message, (code, values) in zip(items, rendered, codes, strict=True):
            row["subject"] = message.subject
            row["body"] = message.body
            row["html"] = message.html
            row["sms_segments"] = message.sms_segments
            row["template_code"] = code
            row["template_params"] = None if values is None else params_json(values)
            out.append(row)
    return out


def _values(column: pd.Series) -> list[Any]:
    """A column as Python values, as ``Series.tolist()`` gives them (missing text: NaN), without
    iterating an arrow-backed column value by value."""
    return column.to_numpy(dtype=object).tolist()


def _by_customer(frame: pd.DataFrame) -> dict[Any, dict[str, Any]]:
    """customer_id -> {column: value} of a frame's rows: what ``frame.set_index("customer_id")
    .loc[cid].to_dict()`` gives, for every customer at once."""
    columns = [c for c in frame.columns if c != "customer_id"]
    values = [_values(frame[c]) for c in columns]
    return {
        cid: dict(zip(columns, row, strict=True))
        for cid, *row in zip(_values(frame["customer_id"]), *values, strict=True)
    }


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()


def stored_customer_context(engine: Engine, customer_id: str, day: date | None = None) -> dict[str, Any]:
    """``customer``, ``order`` and ``category`` objects of a stored customer on ``day`` (default:
    the latest day with segments), for ``huitouke templates preview --customer ID``.

    Raises LookupError when the store has no such customer.
    """
    from huitouke.segments import persist as segment_store

    with engine.connect() as conn:
        if day is None:
            day, _ = segment_store.last_run(conn)
            day = day or date.today()
        profiles = persist.read_profiles(conn, [customer_id])
        if profiles.empty:
            raise LookupError(f"no customer {customer_id!r} in the CRM store")
        row = profiles.iloc[0].to_dict()
        segment = segment_store.segments_on(conn, day, [customer_id])
        if len(segment):
            row.update(segment.iloc[0].to_dict())
        last = persist.read_last_orders(conn, [customer_id], day)
    context: dict[str, Any] = {"customer": ctx.customer_context(row)}
    if len(last):
        o = last.iloc[0]
        context["order"] = ctx.order_context(
            str(o["order_id"]), _as_date(o["business_date"]), _cny(o["amount_cents"]), list(o["categories"])
        )
    if context["customer"].get("category_group"):
        context["category"] = ctx.category_context(context["customer"]["category_group"])
    return context
