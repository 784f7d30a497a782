"""The marketers' campaigns: the ``shop:``, ``contact_pressure:`` and ``campaigns:`` sections of
``include/playbook.yaml``, validated, together with its ``segments:`` section.

:func:`load_playbook` reads the whole file once: ``segments:`` through
:func:`huitouke.segments.settings.parse_segment_settings`, the rest here, strictly (an unknown or
misspelt field is an error). Every error names the file, the line and the dotted field, which
names the campaign, e.g.::

    include/playbook.yaml (line 246): campaigns.coupon_waves.coupon.min_spend_cny: Input should be greater than or equal to 0

The shape (the shipped ``include/playbook.yaml`` documents every field for marketers)::

    shop:             name (SMS signature 【name】), timezone, currency, url, send_window,
                      sms_opt_out_footer, sms_signature_brackets, unit_costs (per SMS segment, e-mail, call)
    contact_pressure: member_tiers {tier: {max_contacts, per_days}}, other_tiers, daily_global_cap
    campaigns:
      <name>:         display_name, kind (marketing | service), priority (higher wins), entry (huitouke.campaigns.rules),
                      reentry_after_days, max_new_entries_per_day, starts_on, ends_on, templates
                      (sms/<name>, email/<name>, call/<name>), channel_policy, sms_max_segments,
                      coupon, variants, waves, holdout, evaluation, template_vars
    approved_sms_templates:
      sms/<name>:     code (the provider's approved template code, Aliyun 模板CODE), params
                      ({name: a Jinja template filling the approved text's ${name}}), text (optional:
                      the approved text, so that its ${...} and params are checked to match)

Money is written in CNY with at most two decimals (``*_cny``) and used in cents; unit costs may
have more decimals (an SMS segment costs a few fen).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from huitouke.campaigns.holdout import DEFAULT_SALT
from huitouke.campaigns.rules import Conditions, EntryRule
from huitouke.config import (
    ConfigError,
    compose_yaml,
    load_validated,
    located_error,
    validation_items,
    yaml_line,
)
from huitouke.pii import get_logger
from huitouke.segments.settings import SegmentSettings, parse_segment_settings, playbook_path

log = get_logger(__name__)

__all__ = [
    "CHANNELS",
    "ApprovedSms",
    "ApprovedSmsTemplate",
    "Campaign",
    "ContactPressure",
    "CouponSpec",
    "EvaluationSettings",
    "HoldoutSettings",
    "Offer",
    "Playbook",
    "SendWindow",
    "ShopProfile",
    "TierCap",
    "UnitCosts",
    "Variant",
    "Waves",
    "channel_of",
    "load_playbook",
    "parse_playbook",
]

SMS, EMAIL, CALL = "sms", "email", "call"
CHANNELS: tuple[str, ...] = (SMS, EMAIL, CALL)
MARKETING, SERVICE = "marketing", "service"
REPURCHASE = "repurchase"

_CAMPAIGN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_TEMPLATE = re.compile(r"^(sms|email|call)/[a-z0-9_]{1,60}$")
_PREFIX = re.compile(r"^[A-Z0-9]{1,6}$")
_SMS_TEMPLATE = re.compile(r"^sms/[a-z0-9_]{1,60}$")
_TEMPLATE_CODE = re.compile(r"^SMS_[A-Z0-9_]{1,60}$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
APPROVED_SECTION = "approved_sms_templates"
MAX_UNIT_COST_CNY = 1_000  # a call by staff may cost a few CNY; an SMS segment a few fen


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _two_decimals(value: float | None) -> float | None:
    if value is not None and round(value * 100) != value * 100:
        raise ValueError("amounts are in CNY with at most two decimals")
    return value


def channel_of(template: str) -> str:
    """``sms/birthday`` -> ``sms``: a template's folder is its channel."""
    return template.split("/", 1)[0]


# ------------------------------------------------------------------------------------------ shop


class SendWindow(_Strict):
    """Messages go out between ``start`` and ``end``, shop time (calls: the staff's call hours)."""

    start: dt.time = dt.time(9, 0)
    end: dt.time = dt.time(20, 0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _sexagesimal(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted 20:00 as the integer 1200 (base 60): take it back.
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < 24 * 60:
                raise ValueError('write the time as "HH:MM", e.g. "09:00"')
            return dt.time(value // 60, value % 60)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if not self.start < self.end:
            raise ValueError(f"start ({self.start:%H:%M}) must be before end ({self.end:%H:%M})")
        return self

    def contains(self, moment: dt.time) -> bool:
        """Whether a shop-local time of day is inside the window (end excluded)."""
        return self.start <= moment < self.end


class UnitCosts(_Strict):
    """What one message costs, in CNY (for the evaluation's cost and ROI): finite, at most
    :data:`MAX_UNIT_COST_CNY` (an infinite cost would show as "-" with an ROI of 0)."""

    sms_segment_cny: float = Field(0.05, ge=0, le=MAX_UNIT_COST_CNY)
    email_cny: float = Field(0.0, ge=0, le=MAX_UNIT_COST_CNY)
    call_cny: float = Field(0.0, ge=0, le=MAX_UNIT_COST_CNY)

    def per_message_cny(self, channel: str, sms_segments: int = 1) -> float:
        if channel == SMS:
            return self.sms_segment_cny * sms_segments
        return self.email_cny if channel == EMAIL else self.call_cny


class ShopProfile(_Strict):
    """The ``shop:`` section: how the shop signs and when it may send."""

    name: str = Field(min_length=1, max_length=20)
    timezone: str | None = None
    currency: str = "CNY"
    url: str | None = Field(None, max_length=200)
    send_window: SendWindow = SendWindow()
    sms_opt_out_footer: str = Field("回T退订", min_length=1, max_length=20)
    sms_signature_brackets: bool = True
    unit_costs: UnitCosts = UnitCosts()

    @field_validator("name")
    @classmethod
    def _signature(cls, value: str) -> str:
        value = value.strip()
        if any(ch in value for ch in "【】[]"):
            raise ValueError("write the name without brackets: the SMS signature 【name】 adds them")
        if len(value) < 2:
            raise ValueError("the SMS signature needs at least 2 characters")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as Asia/Shanghai)") from None
        return value

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"use a three-letter currency code such as CNY, got {value!r}")
        return value

    @property
    def signature(self) -> str:
        return f"【{self.name}】"

    def timezone_or(self, engineer_timezone: str) -> str:
        """The shop's timezone: the playbook's if given, which must agree with the data engineer's
        ``include/huitouke.yaml`` (``shop.timezone``, which defines the DAG's business day)."""
        if self.timezone is not None and self.timezone != engineer_timezone:
            raise ConfigError(
                f"playbook shop.timezone is {self.timezone} but include/huitouke.yaml shop.timezone is "
                f"{engineer_timezone}: business days and the send window must use the same timezone"
            )
        return self.timezone or engineer_timezone


# ------------------------------------------------------------------------------ contact pressure


class TierCap(_Strict):
    """At most ``max_contacts`` capped contacts in any ``per_days`` consecutive days (today included)."""

    max_contacts: int = Field(ge=0, le=100)
    per_days: int = Field(ge=1, le=366)


def _default_tier_caps() -> dict[str, TierCap]:
    return {
        "vip": TierCap(max_contacts=2, per_days=7),
        "active": TierCap(max_contacts=1, per_days=7),
        "normal": TierCap(max_contacts=1, per_days=30),
    }


class ContactPressure(_Strict):
    """The ``contact_pressure:`` section: frequency caps per member tier and a daily global cap."""

    member_tiers: dict[str, TierCap] = Field(default_factory=_default_tier_caps)
    other_tiers: TierCap = TierCap(max_contacts=1, per_days=30)
    daily_global_cap: int | None = Field(None, ge=0)

    def cap_for(self, tier: str | None) -> TierCap:
        if tier is None:
            return self.other_tiers
        return self.member_tiers.get(tier, self.other_tiers)

    @property
    def longest_window_days(self) -> int:
        """How many past days of contact history the caps look at."""
        return max([self.other_tiers.per_days, *(c.per_days for c in self.member_tiers.values())])


# ------------------------------------------------------------------------------------ campaigns


class CouponSpec(_Strict):
    """A coupon: ``value_cny`` off an order of at least ``min_spend_cny`` (0 = no threshold, 无门槛),
    valid ``valid_days`` days after the wave's business day."""

    value_cny: float = Field(gt=0, le=100_000)
    min_spend_cny: float = Field(0, ge=0, le=1_000_000)
    valid_days: int = Field(ge=1, le=366)
    prefix: str | None = None

    @field_validator("value_cny", "min_spend_cny")
    @classmethod
    def _amounts(cls, value: float) -> float:
        return _two_decimals(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and not _PREFIX.match(value):
            raise ValueError("a code prefix is 1 to 6 capital letters or digits, e.g. CW")
        return value

    @model_validator(mode="after")
    def _threshold_above_value(self) -> CouponSpec:
        if self.min_spend_cny and self.min_spend_cny <= self.value_cny:
            raise ValueError(
                f"min_spend_cny ({self.min_spend_cny:g}) must be above value_cny ({self.value_cny:g}), "
                "or 0 for a coupon without threshold"
            )
        return self

    @property
    def value_cents(self) -> int:
        return round(self.value_cny * 100)

    @property
    def min_spend_cents(self) -> int:
        return round(self.min_spend_cny * 100)


class Waves(_Strict):
    """Wave 1 is due ``first_after_days`` after entry (0 = the entry day); wave k+1 is due
    ``interval_days`` after wave k; at most ``max_waves``. ``stop_on: [repurchase]`` ends the
    entry as soon as the customer buys again after entering."""

    first_after_days: int = Field(0, ge=0, le=3650)
    interval_days: int | None = Field(None, ge=1, le=3650)
    max_waves: int = Field(1, ge=1, le=24)
    stop_on: list[Literal["repurchase"]] = Field(default_factory=lambda: [REPURCHASE])

    @model_validator(mode="after")
    def _interval_for_several(self) -> Waves:
        if self.max_waves > 1 and self.interval_days is None:
            raise ValueError(f"max_waves is {self.max_waves}: say interval_days (days between waves)")
        return self

    def due_offset(self, wave: int) -> int:
        """Days from entry to wave ``wave`` (1-based)."""
        return self.first_after_days + (wave - 1) * (self.interval_days or 0)

    @property
    def stops_on_repurchase(self) -> bool:
        return REPURCHASE in self.stop_on


class HoldoutSettings(_Strict):
    """``share`` of the entering customers receive nothing (a number such as 0.1 or "10%")."""

    share: float = Field(0.10, ge=0, le=0.9)
    salt: str = Field(DEFAULT_SALT, min_length=1, max_length=64)

    @field_validator("share", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                return float(value.strip()[:-1]) / 100
            except ValueError:
                raise ValueError(f'write the share as 0.1 or "10%", got {value!r}') from None
        return value


class EvaluationSettings(_Strict):
    """Days after a wave at which its response is measured; ``primary_days`` is the headline."""

    windows_days: list[int] = Field(default_factory=lambda: [2, 10, 30])
    primary_days: int = 10

    @field_validator("windows_days")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one window, e.g. [2, 10, 30]")
        if any(v < 1 or v > 365 for v in value):
            raise ValueError("windows are between 1 and 365 days")
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"windows must be strictly increasing, got {value}")
        return value

    @model_validator(mode="after")
    def _primary_is_a_window(self) -> EvaluationSettings:
        if self.primary_days not in self.windows_days:
            raise ValueError(
                f"primary_days ({self.primary_days}) must be one of windows_days {self.windows_days}"
            )
        return self


def _check_templates(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    seen: set[str] = set()
    for template in value:
        if not _TEMPLATE.match(template):
            raise ValueError(
                f"template {template!r} must be sms/<name>, email/<name> or call/<name> "
                "(the file include/templates/<channel>/<name>...j2)"
            )
        channel = channel_of(template)
        if channel in seen:
            raise ValueError(f"two templates for channel {channel}: one per channel")
        seen.add(channel)
    return value


class Variant(Conditions):
    """A variant of a campaign, chosen at entry: the first whose conditions hold. It may replace
    the campaign's templates and coupon (``coupon: null`` = no coupon for this variant)."""

    templates: list[str] | None = None
    coupon: CouponSpec | None = None

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        return _check_templates(value)


@dataclass(frozen=True)
class Offer:
    """What an entry of a campaign variant receives: templates per channel and the coupon."""

    campaign: str
    variant: str
    templates: tuple[str, ...]
    coupon: CouponSpec | None

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(channel_of(t) for t in self.templates)

    def template_for(self, channel: str) -> str:
        return next(t for t in self.templates if channel_of(t) == channel)


class Campaign(_Strict):
    """One campaign of the ``campaigns:`` section (the key is its name)."""

    description: str = ""
    display_name: str | None = Field(None, min_length=1, max_length=40)  # {{ campaign.display_name }}
    enabled: bool = True
    kind: Literal["marketing", "service"] = MARKETING
    priority: int = Field(ge=1, le=999)
    entry: EntryRule
    starts_on: dt.date | None = None
    ends_on: dt.date | None = None
    reentry_after_days: int | None = Field(None, ge=1, le=3650)
    max_new_entries_per_day: int | None = Field(None, ge=1)
    templates: list[str] = Field(default_factory=list)
    channel_policy: Literal["all", "first_reachable"] = "all"
    sms_max_segments: int = Field(2, ge=1, le=10)
    coupon: CouponSpec | None = None
    variants: dict[str, Variant] = Field(default_factory=dict)
    waves: Waves = Waves()
    holdout: HoldoutSettings = HoldoutSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    template_vars: dict[str, Any] = Field(default_factory=dict)

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        return _check_templates(value)

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict[str, Variant]) -> dict[str, Variant]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", str(name)):
                raise ValueError(
                    f"variant name {name!r}: lower-case letters, digits and underscores, e.g. new"
                )
        return value

    @field_validator("template_vars")
    @classmethod
    def _plain_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        scalar = (str, int, float, bool)
        for key, item in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", str(key)):
                raise ValueError(f"template variable {key!r}: lower-case letters, digits and underscores")
            ok = isinstance(item, scalar) or (
                isinstance(item, list) and all(isinstance(i, scalar) for i in item)
            )
            if not ok:
                raise ValueError(f"template variable {key!r}: a text, a number or a list of them")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Campaign:
        if not self.templates and not self.variants:
            raise ValueError("say templates: [sms/<name>, ...] (or give variants with templates)")
        if not self.templates:
            lacking = [name for name, v in self.variants.items() if not v.templates]
            if lacking:
                raise ValueError(
                    f"variant(s) {', '.join(lacking)} have no templates and the campaign has none to inherit"
                )
        if self.starts_on and self.ends_on and self.ends_on < self.starts_on:
            raise ValueError(f"ends_on ({self.ends_on}) is before starts_on ({self.starts_on})")
        return self

    def offer(self, name: str, variant: str) -> Offer:
        """The templates and coupon of ``variant`` ('' = the campaign itself). An unknown variant
        (renamed since the entry) falls back to the campaign's, else the first variant's."""
        spec = self.variants.get(variant)
        if spec is None and not self.templates and self.variants:
            spec = next(iter(self.variants.values()))
        templates = tuple((spec.templates if spec and spec.templates else None) or self.templates)
        coupon = self.coupon
        if spec is not None and "coupon" in spec.model_fields_set:
            coupon = spec.coupon
        return Offer(campaign=name, variant=variant, templates=templates, coupon=coupon)

    def active_on(self, day: dt.date) -> bool:
        """Whether customers may enter on ``day`` (enabled, within starts_on .. ends_on)."""
        return (
            self.enabled
            and (self.starts_on is None or day >= self.starts_on)
            and (self.ends_on is None or day <= self.ends_on)
        )

    @property
    def counts_toward_caps(self) -> bool:
        return self.kind == MARKETING


# ------------------------------------------------------------------------ approved SMS templates


def _template_code(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not _TEMPLATE_CODE.match(value):
        raise ValueError(
            f"template code {value!r}: copy it from the provider's console, e.g. SMS_123456789 "
            "(SMS_ then capital letters, digits or _)"
        )
    return value


def _param_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError('write the parameter as text in quotes, e.g. "{{ coupon.value_cny | cny }}"')
    return value


def _param_source(value: str) -> str:
    if not value.strip():
        raise ValueError('the parameter is empty: write what fills it, e.g. "{{ customer.first_name }}"')
    if len(value) > 500:
        raise ValueError("at most 500 characters")
    return value


# A parameter's value: a Jinja template (``"{{ coupon.value_cny | cny }}"``), checked where it is.
ParamSource = Annotated[str, BeforeValidator(_param_text), AfterValidator(_param_source)]


def _param_names(value: dict[str, str]) -> dict[str, str]:
    for name in value:
        if not _PARAM_NAME.match(str(name)):
            raise ValueError(
                f"parameter {name!r}: the name inside ${{...}} of the approved text, letters, digits "
                "and underscores"
            )
    return value


def _params_match_text(text: str | None, params: dict[str, str]) -> None:
    """The approved text's ``${...}`` and the params name the same parameters."""
    if text is None:
        return
    placeholders = list(dict.fromkeys(_PLACEHOLDER.findall(text)))
    missing = [p for p in placeholders if p not in params]
    extra = [p for p in params if p not in placeholders]
    if missing or extra:
        parts = ([f"no params for {', '.join(missing)}"] if missing else []) + (
            [f"params {', '.join(extra)} not in the text"] if extra else []
        )
        raise ValueError(
            f"params and the approved text's ${{...}} differ: {'; '.join(parts)} "
            "(the provider refuses a message whose parameters do not match)"
        )


class _ApprovedFields(_Strict):
    """The fields an approved template and a mapping share, and their checks."""

    code: str | None = Field(None, max_length=64)
    params: dict[str, ParamSource] = Field(default_factory=dict)
    text: str | None = Field(None, min_length=1, max_length=500)

    @field_validator("code")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        return _template_code(value)

    @field_validator("params")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        return _param_names(value)


class ApprovedSms(_ApprovedFields):
    """One template as the SMS provider approved it: its ``code`` (Aliyun 模板CODE) and the
    ``params`` that fill the approved text's ``${name}``, each a Jinja template rendered in the
    same sandbox and context as the message. ``text``, optional, is the approved text as the
    console shows it: given, its ``${...}`` and ``params`` must name the same parameters."""

    code: str = Field(max_length=64)  # type: ignore[assignment]  # required here

    @model_validator(mode="after")
    def _match(self) -> ApprovedSms:
        _params_match_text(self.text, self.params)
        return self


class ApprovedSmsTemplate(_ApprovedFields):
    """What an SMS provider that delivers only pre-approved templates (Aliyun: Chinese operators
    require it) approved for one playbook SMS template: one approved template (``code``,
    ``params``, ``text`` as in :class:`ApprovedSms`) for all its messages, and/or one per
    category-group variant of the message (``variants: {food: {code, params}, ...}``; a group
    without its own uses the top-level ``code``, else the ``default`` variant's).

    Where the mapping is in the playbook (``file``, ``line_of``) is kept for the lint and the
    render errors, which name the playbook's line."""

    variants: dict[str, ApprovedSms] = Field(default_factory=dict)
    _file: str = PrivateAttr("include/playbook.yaml")
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)  # dotted path in the mapping -> line

    @model_validator(mode="after")
    def _coherent(self) -> ApprovedSmsTemplate:
        if self.code is None and not self.variants:
            raise ValueError("say the approved template's code (and its params), or variants")
        if self.code is None and (self.params or self.text):
            raise ValueError("params and text belong to a code: say the code too, or move them into variants")
        _params_match_text(self.text, self.params)
        return self

    def approved_for(self, variant: str | None) -> ApprovedSms:
        """The approved template of a variant (None: the top-level one)."""
        if variant is None:
            return ApprovedSms.model_construct(code=self.code, params=self.params, text=self.text)
        return self.variants[variant]

    def choose(self, group: str | None) -> str | None:
        """Which approved template a message of category group ``group`` uses: its variant, else
        the top-level one (None), else the ``default`` variant. LookupError when none fits."""
        if group is not None and group in self.variants:
            return group
        if self.code is not None:
            return None
        if "default" in self.variants:
            return "default"
        raise LookupError(group)

    @property
    def file(self) -> str:
        return self._file

    def line_of(self, param: str | None = None, variant: str | None = None) -> int | None:
        """The playbook line of a parameter, else of its variant, else of the mapping."""
        base = f"variants.{variant}" if variant is not None else ""
        keys = ([f"{base}.params.{param}".lstrip(".")] if param is not None else []) + [base]
        return next((self._lines[k] for k in keys if k in self._lines), self._lines.get(""))

    def locate(self, file: str, lines: dict[str, int]) -> None:
        """Record where the mapping is written (done once, by :func:`parse_playbook`)."""
        self._file, self._lines = file, dict(lines)

    def located_paths(self) -> list[tuple[str, ...]]:
        """The paths inside the mapping whose lines errors name (for :meth:`locate`)."""
        paths: list[tuple[str, ...]] = [(), *(("params", p) for p in self.params)]
        for group, approved in self.variants.items():
            paths.append(("variants", group))
            paths.extend(("variants", group, "params", p) for p in approved.params)
        return paths


def _check_approved(value: Any) -> Any:
    if value is None:
        return {}
    if isinstance(value, list):
        raise ValueError("write approved_sms_templates as a mapping, `sms/<name>:` then code and params")
    return value


class Playbook(_Strict):
    """The whole playbook: segments rules, shop, contact pressure, campaigns, and the SMS
    templates' approved counterparts at the provider."""

    segments: SegmentSettings = SegmentSettings()
    shop: ShopProfile
    contact_pressure: ContactPressure = ContactPressure()
    campaigns: dict[str, Campaign] = Field(default_factory=dict)
    approved_sms_templates: dict[str, ApprovedSmsTemplate] = Field(default_factory=dict)

    @field_validator("approved_sms_templates", mode="before")
    @classmethod
    def _approved_shape(cls, value: Any) -> Any:
        return _check_approved(value)

    def approved_template(self, template: str) -> ApprovedSmsTemplate | None:
        """The provider-approved counterpart of an SMS template (``sms/coupon_wave``), if mapped."""
        return self.approved_sms_templates.get(template)

    def sms_templates_in_use(self) -> list[str]:
        """The SMS templates the enabled campaigns send (``sms/<name>``), in priority order."""
        used: list[str] = []
        for name, campaign in self.campaigns_by_priority():
            for variant in (list(campaign.variants) or [""]) if campaign.enabled else ():
                for template in campaign.offer(name, variant).templates:
                    if channel_of(template) == SMS and template not in used:
                        used.append(template)
        return used

    @field_validator("campaigns", mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, list):
            raise ValueError("write campaigns as a mapping, `name:` then its fields (not a list)")
        return value

    def campaigns_by_priority(self) -> list[tuple[str, Campaign]]:
        """Campaigns, highest priority first."""
        return sorted(self.campaigns.items(), key=lambda item: -item[1].priority)

    def sms_budgets(self) -> dict[str, int]:
        """SMS template name (``thank_you_new``) -> the most segments its campaign allows
        (the smallest budget when two campaigns share a template)."""
        budgets: dict[str, int] = {}
        for name, campaign in self.campaigns.items():
            for variant in list(campaign.variants) or [""]:
                for template in campaign.offer(name, variant).templates:
                    if channel_of(template) == SMS:
                        key = template.split("/", 1)[1]
                        budgets[key] = min(
                            budgets.get(key, campaign.sms_max_segments), campaign.sms_max_segments
                        )
        return budgets


# --------------------------------------------------------------------------------------- loading


def _cross_checks(playbook: Playbook) -> list[tuple[tuple[Any, ...], str]]:
    """Checks across sections, as (location, message) pairs."""
    issues: list[tuple[tuple[Any, ...], str]] = []
    tiers = playbook.segments.member_tiers.tiers
    written = (
        "member_tiers" in playbook.contact_pressure.model_fields_set
    )  # the defaults may name absent tiers
    for tier in playbook.contact_pressure.member_tiers if written else ():
        if tier not in tiers:
            issues.append(
                (
                    ("contact_pressure", "member_tiers", tier),
                    f"unknown member tier {tier!r} (segments.member_tiers has: {', '.join(tiers)})",
                )
            )
    seen: dict[int, str] = {}
    for name, campaign in playbook.campaigns.items():
        if not _CAMPAIGN_NAME.match(str(name)):
            issues.append(
                (
                    ("campaigns", name),
                    "a campaign name is lower-case letters, digits and underscores (max 40)",
                )
            )
        if campaign.priority in seen:
            issues.append(
                (
                    ("campaigns", name, "priority"),
                    f"priority {campaign.priority} is also {seen[campaign.priority]}'s: priorities must differ "
                    "(the higher wins when a customer qualifies for several campaigns on one day)",
                )
            )
        seen.setdefault(campaign.priority, name)
    for template in playbook.approved_sms_templates:
        if not _SMS_TEMPLATE.match(str(template)):
            issues.append(
                (
                    (APPROVED_SECTION, template),
                    "write the SMS template as the campaigns do, sms/<name> (only SMS needs a "
                    "provider-approved template)",
                )
            )
    return issues


def parse_playbook(data: Any, where: str, source: str | None = None) -> Playbook:
    """Validate a loaded playbook (the whole file). ``source`` is the YAML text, for line numbers."""
    segments = parse_segment_settings(data, where, source)
    data = data or {}
    rest = {key: value for key, value in data.items() if key != "segments"}
    if "campaigns" not in rest:
        log.warning("%s: no campaigns: section, so no campaign runs", where)
    try:
        playbook = Playbook.model_validate({**rest, "segments": segments}, context={"segments": segments})
    except ValidationError as exc:
        raise located_error(where, source, validation_items(exc)) from None
    issues = _cross_checks(playbook)
    if issues:
        raise located_error(where, source, issues)
    _locate_approved(playbook, where, source)
    return playbook


def _locate_approved(playbook: Playbook, where: str, source: str | None) -> None:
    """Give each approved template its file and lines, for the errors that name them later."""
    root = compose_yaml(source) if playbook.approved_sms_templates else None
    for template, approved in playbook.approved_sms_templates.items():
        at = (APPROVED_SECTION, template)
        lines = {".".join(path): yaml_line(root, (*at, *path)) for path in approved.located_paths()}
        approved.locate(where, {k: v for k, v in lines.items() if v})


def load_playbook(path: Path | None = None) -> Playbook:
    """The validated playbook (default :func:`huitouke.segments.settings.playbook_path`)."""
    return load_validated(path or playbook_path(), parse_playbook)
