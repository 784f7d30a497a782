"""The marketers' segmentation rules: the ``segments:`` section of ``include/playbook.yaml``.

The playbook belongs to the marketers; other sections (``shop:``, ``campaigns:``, added by later
stages) are read by their own loaders and ignored here, while ``segments:`` is validated strictly:
an unknown or misspelt field is an error. Every error names the file, the line and the dotted
field, e.g. ``include/playbook.yaml (line 52): segments.value_tiers.thresholds_cny: ...``.

A playbook without a ``segments:`` section gets the defaults below, which are the shipped
playbook's values (DOMAIN.md: churn after one year, value tiers at 70 and 140 CNY, flash-sale and
points customers as low-value acquisitions).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from huitouke import records
from huitouke.config import ConfigError, load_validated, located_error, project_home, validation_items
from huitouke.pii import get_logger
from huitouke.store.schema import segment_history

log = get_logger(__name__)

__all__ = [
    "LifecycleOverride",
    "LifecycleSettings",
    "MemberTierSettings",
    "SegmentSettings",
    "TierRule",
    "ValueTierSettings",
    "load_segment_settings",
    "parse_segment_settings",
    "playbook_path",
]

_NAME = re.compile(r"^[a-z0-9_]+$")
# The longest tier name the segment history can store (its member_tier and value_tier columns).
_NAME_LENGTH = min(segment_history.c.member_tier.type.length, segment_history.c.value_tier.type.length)
# Top-level sections of the playbook, this stage's and the later stages'.
PLAYBOOK_SECTIONS: tuple[str, ...] = (
    "segments",
    "shop",
    "contact_pressure",
    "campaigns",
    "approved_sms_templates",
)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be lower-case letters, digits and underscores, e.g. 'vip'")
    if len(value) > _NAME_LENGTH:
        raise ValueError(f"{what} {value!r} is longer than {_NAME_LENGTH} characters")
    return value


# What the store keeps of the state. 2: the spend rows per category group (store revision 0005),
# which a store whose last run was of format 1 gets by one rebuild.
STATE_FORMAT = 2


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LifecycleOverride(_Section):
    """Per category group: long-cycle goods (durables) are bought again much later."""

    at_risk_days: int | None = Field(None, ge=1)
    churn_days: int | None = Field(None, ge=1)


class LifecycleSettings(_Section):
    """Day counts are business days since the order's business date (day 0 = the day of the order).

    A state that holds "for N days" holds on days 0 .. N-1 and is over on day N: a customer is new
    while ``days_since_first_order < new_days``, at risk once ``days_since_last_order >=
    at_risk_days`` and churned once ``days_since_last_order >= churn_days``.
    """

    new_days: int = Field(30, ge=1)
    at_risk_days: int = Field(180, ge=1)
    churn_days: int = Field(365, ge=1)
    loyal_min_orders: int = Field(4, ge=2)
    by_category_group: dict[str, LifecycleOverride] = Field(
        default_factory=lambda: {"durables": LifecycleOverride(at_risk_days=365, churn_days=730)}
    )

    @model_validator(mode="after")
    def _windows_are_ordered(self) -> LifecycleSettings:
        if not self.new_days < self.at_risk_days < self.churn_days:
            raise ValueError(
                f"expected new_days < at_risk_days < churn_days, got {self.new_days}, "
                f"{self.at_risk_days}, {self.churn_days}"
            )
        for group in self.by_category_group:
            at_risk, churn = self.windows_for(group)
            if not at_risk < churn:
                raise ValueError(
                    f"by_category_group.{group}: at_risk_days ({at_risk}) must be below churn_days ({churn})"
                )
        return self

    def windows_for(self, group: str | None) -> tuple[int, int]:
        """(at_risk_days, churn_days) for a category group (None: no group), overrides applied."""
        override = self.by_category_group.get(group)
        at_risk = override.at_risk_days if override and override.at_risk_days else self.at_risk_days
        churn = override.churn_days if override and override.churn_days else self.churn_days
        return at_risk, churn


class TierRule(_Section):
    """One member tier: every condition given must hold (scores are 1..5, 5 = best)."""

    tier: str
    min_r: int | None = Field(None, ge=1, le=5)
    min_f: int | None = Field(None, ge=1, le=5)
    min_m: int | None = Field(None, ge=1, le=5)
    min_paid_orders: int | None = Field(None, ge=1)
    min_total_cny: float | None = Field(None, ge=0)

    @field_validator("tier")
    @classmethod
    def _tier_name(cls, value: str) -> str:
        return _check_name(value, "tier name")

    @model_validator(mode="after")
    def _has_a_condition(self) -> TierRule:
        if all(v is None for v in self.conditions().values()):
            raise ValueError(
                f"a rule needs at least one of {', '.join(self.conditions())} "
                "(customers matching no rule get the `otherwise` tier)"
            )
        return self

    def conditions(self) -> dict[str, float | None]:
        return {
            "min_r": self.min_r,
            "min_f": self.min_f,
            "min_m": self.min_m,
            "min_paid_orders": self.min_paid_orders,
            "min_total_cny": self.min_total_cny,
        }


class MemberTierSettings(_Section):
    """Rules are tried from top to bottom; a customer gets the first tier whose conditions all hold."""

    rules: list[TierRule] = Field(
        default_factory=lambda: [
            TierRule(tier="vip", min_r=3, min_f=4, min_m=5, min_paid_orders=3),
            TierRule(tier="active", min_r=3, min_f=3, min_m=3, min_paid_orders=2),
        ]
    )
    otherwise: str = "normal"

    @field_validator("otherwise")
    @classmethod
    def _otherwise_name(cls, value: str) -> str:
        return _check_name(value, "tier name")

    @model_validator(mode="after")
    def _distinct_tiers(self) -> MemberTierSettings:
        names = [rule.tier for rule in self.rules] + [self.otherwise]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"tier names must be distinct: {', '.join(duplicated)} appears more than once")
        return self

    @property
    def tiers(self) -> tuple[str, ...]:
        """All tier names, best first, ``otherwise`` last."""
        return (*(rule.tier for rule in self.rules), self.otherwise)


class ValueTierSettings(_Section):
    """Tiers by average order value: ``labels[i]`` for AOV in (thresholds[i-1], thresholds[i]]."""

    thresholds_cny: list[float] = Field(default_factory=lambda: [70.0, 140.0])
    labels: list[str] = Field(default_factory=lambda: ["low", "mid", "premium"])

    @field_validator("thresholds_cny")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give at least one threshold in CNY, e.g. [70, 140]")
        if any(v <= 0 for v in value):
            raise ValueError("thresholds must be above 0 CNY")
        if any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"thresholds must be strictly increasing, got {value}")
        if any(round(v * 100) != v * 100 for v in value):
            raise ValueError("thresholds are amounts in CNY with at most two decimals")
        return value

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: list[str]) -> list[str]:
        for label in value:
            _check_name(label, "tier label")
        if len(set(value)) != len(value):
            raise ValueError("labels must be distinct")
        return value

    @model_validator(mode="after")
    def _one_label_per_tier(self) -> ValueTierSettings:
        if len(self.labels) != len(self.thresholds_cny) + 1:
            raise ValueError(
                f"{len(self.thresholds_cny)} thresholds make {len(self.thresholds_cny) + 1} tiers, "
                f"but {len(self.labels)} labels are given"
            )
        return self

    @property
    def thresholds_cents(self) -> list[int]:
        return [round(v * 100) for v in self.thresholds_cny]


class SegmentSettings(_Section):
    """The ``segments:`` section."""

    # group -> categories. A category listed nowhere is a group of its own; orders and lines without
    # a category (records.UNKNOWN_CATEGORY) go to `unknown_category_group`.
    category_groups: dict[str, list[str]] = Field(default_factory=dict)
    unknown_category_group: str = "other"
    lifecycle: LifecycleSettings = LifecycleSettings()
    member_tiers: MemberTierSettings = MemberTierSettings()
    value_tiers: ValueTierSettings = ValueTierSettings()
    low_value_sources: list[str] = Field(default_factory=lambda: [records.FLASH_SALE, records.POINTS])

    @field_validator("category_groups")
    @classmethod
    def _each_category_once(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for group, categories in value.items():
            if not group.strip():
                raise ValueError("a group name cannot be empty")
            for category in categories:
                if category in seen and seen[category] != group:
                    raise ValueError(f"category {category!r} is in two groups: {seen[category]} and {group}")
                seen[category] = group
        return value

    @field_validator("low_value_sources")
    @classmethod
    def _known_sources(cls, value: list[str]) -> list[str]:
        out = []
        for source in value:
            canonical = records.ACQUISITION_SYNONYMS.get(str(source).strip().lower()) or (
                records.ACQUISITION_SYNONYMS.get(str(source).strip())
            )
            if canonical is None or not str(source).strip():
                known = ", ".join(records.ACQUISITION_SOURCES)
                raise ValueError(
                    f"unknown acquisition source {source!r} (known: {known}; 聚划算 and 淘金币 work too)"
                )
            out.append(canonical)
        return sorted(set(out))

    def category_group_map(self) -> dict[str, str]:
        """category -> group for every listed category, plus the unknown category."""
        mapping = {records.UNKNOWN_CATEGORY: self.unknown_category_group, "": self.unknown_category_group}
        for group, categories in self.category_groups.items():
            for category in categories:
                mapping[category] = group
        return mapping

    def group_of(self, category: str | None) -> str:
        if category is None:
            return self.unknown_category_group
        return self.category_group_map().get(category, category)

    def state_fingerprint(self) -> str:
        """A hash of what the customer state depends on: the category grouping, and the version of
        what the store keeps of the state (:data:`STATE_FORMAT`).

        When it changes, the stored state must be rebuilt from all orders; the other rules only
        affect the daily classification and take effect on the next run.
        """
        payload = json.dumps(
            {"format": STATE_FORMAT, "groups": self.category_group_map()}, sort_keys=True, ensure_ascii=False
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class _Playbook(BaseModel):
    """The playbook as this stage sees it: other sections are somebody else's."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    segments: SegmentSettings = SegmentSettings()


def playbook_path() -> Path:
    """``$HUITOUKE_PLAYBOOK`` or ``include/playbook.yaml`` under the project home."""
    env = os.environ.get("HUITOUKE_PLAYBOOK")
    return Path(env).resolve() if env else project_home() / "include" / "playbook.yaml"


def parse_segment_settings(data: Any, where: str, source: str | None = None) -> SegmentSettings:
    """Validate a loaded playbook (the whole file); only ``segments:`` is looked at.

    ``source`` is the YAML text, used to add line numbers to the messages.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections (segments, and later shop and campaigns)")
    for section in data:
        if section not in PLAYBOOK_SECTIONS:
            close = difflib.get_close_matches(str(section), PLAYBOOK_SECTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            log.warning("%s: unknown section %r%s", where, section, hint)
    try:
        return _Playbook.model_validate(data).segments
    except ValidationError as exc:
        raise located_error(where, source, validation_items(exc)) from None


def load_segment_settings(path: Path | None = None) -> SegmentSettings:
    """The validated ``segments:`` section of the playbook (default :func:`playbook_path`)."""
    return load_validated(path or playbook_path(), parse_segment_settings)
