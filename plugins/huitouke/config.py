"""The data engineer's configuration (``include/huitouke.yaml``), loaded and validated.

A mistake in the file is reported with the file's path and the dotted field that is wrong,
e.g. ``include/huitouke.yaml: intake.sql.query: Field required``, both in the CLI and as the
DAG's import error in the Airflow UI.

Every YAML file of the project (this configuration, the playbook with its segments and approved
SMS templates) is read by :func:`load_yaml` with :class:`StrictYamlLoader`: a key written twice in
one mapping is an error naming the file, the line and the key (plain YAML keeps the last value
silently), and an impossible date (``starts_on: 2025-13-45``) stays the text it is, so that the
field's validation names the file, the line and the field instead of a bare "month must be in 1..12".
"""

from __future__ import annotations

import codecs
import datetime as dt
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file is missing or wrong; the message names the file and the field."""


def project_home() -> Path:
    """The project root: ``$HUITOUKE_HOME`` or the folder above ``plugins/``.

    Inside Airflow (docker-compose or an existing deployment) ``plugins/`` and ``include/``
    are siblings, so the default works there too.
    """
    env = os.environ.get("HUITOUKE_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def config_path() -> Path:
    """``$HUITOUKE_CONFIG`` or ``include/huitouke.yaml`` under the project home."""
    env = os.environ.get("HUITOUKE_CONFIG")
    return Path(env).resolve() if env else project_home() / "include" / "huitouke.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShopSettings(_Section):
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as Asia/Shanghai)") from None
        return value


class StoreSettings(_Section):
    conn_id: str = "crm_db"
    # The Airflow pool every task that writes the store takes a slot of: one slot serializes the
    # writers of an embedded SQLite store; PostgreSQL may have more.
    pool: str = "huitouke_store"


class ScheduleSettings(_Section):
    start_date: dt.date = dt.date(2025, 1, 1)
    catchup: bool = False


class SqlSourceSettings(_Section):
    conn_id: str = "shop_db"
    query: str
    # One value: the source's latest order update (shop time). The day counts as complete once it
    # is at least freshness.max_quiet_hours before the day's end.
    watermark_query: str | None = None

    @field_validator("query")
    @classmethod
    def _has_interval_parameters(cls, value: str) -> str:
        missing = [p for p in (":start", ":end") if p not in value]
        if missing:
            raise ValueError(
                f"the query must select the business day with bound parameters {' and '.join(missing)}"
            )
        return value


class FileSourceSettings(_Section):
    """The ``intake.files`` section: a folder of CSV or Parquet exports (docs/intake.md)."""

    folder: str = "data/exports"
    pattern: str = "*.csv"
    mapping: str | dict[str, str] = "canonical"
    encoding: str | None = None
    # No file for the business day: "fail" stops the day naming the expected file (most likely a
    # broken upstream); "warn" logs a warning and reads the day as no orders.
    when_missing: Literal["fail", "warn"] = "fail"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding {value!r} (for example utf-8, gb18030, utf-16)") from None
        return value

    def folder_path(self) -> Path:
        path = Path(self.folder)
        return path if path.is_absolute() else project_home() / path


class HttpSourceSettings(_Section):
    conn_id: str = "orders_api"
    endpoint: str = "/orders"
    params: dict[str, Any] = Field(default_factory=dict)
    start_param: str = "updated_from"
    end_param: str = "updated_to"
    time_format: Literal["iso", "local", "epoch"] = "iso"
    pagination: Literal["page", "cursor", "next_url"] = "page"
    page_param: str = "page"
    page_size_param: str = "page_size"
    page_size: int = Field(100, gt=0)
    records_field: str = "orders"
    cursor_field: str = "next_cursor"
    cursor_param: str = "cursor"
    next_url_field: str = "next"
    lines_field: str | None = None
    mapping: str | dict[str, str] = "canonical"
    timeout_seconds: float = Field(30, gt=0)
    max_retries: int = Field(5, ge=0)


class FreshnessSettings(_Section):
    """When a business day's source data counts as complete (docs/intake.md, "Freshness")."""

    # The day's orders must be at least this share of the median of the trailing days' orders...
    min_share_of_median: float = Field(0.2, ge=0, le=1)
    trailing_days: int = Field(28, gt=0)
    # ... once the store has this many earlier days to take a median of.
    min_history_days: int = Field(7, gt=0)
    # SQL with a watermark_query: the latest update may be at most this long before the day's end.
    max_quiet_hours: float = Field(6, ge=0)


class PlausibilitySettings(_Section):
    """What validation accepts as a plausible order; anything outside is quarantined with its
    reason (docs/intake.md, "Plausibility"). Generous defaults, but always finite."""

    # Ceilings in CNY (a phone number pasted into the amount column is a 13.8-billion-CNY order).
    max_order_amount: float = Field(1_000_000, gt=0, le=1_000_000_000)
    max_line_amount: float = Field(1_000_000, gt=0, le=1_000_000_000)
    max_line_quantity: int = Field(100_000, ge=1, le=1_000_000_000)
    # paid_at and updated_at must fall (shop time) from days_before the business day to
    # days_after the last business day read: a refund may come a year after the payment.
    days_before: int = Field(400, ge=0, le=36_500)
    days_after: int = Field(2, ge=0, le=3_650)
    # order_id, customer_id, coupon_code, sku: printable, at most this long (the store keeps 64).
    max_id_length: int = Field(64, ge=1, le=64)

    def window(self, first_day: dt.date, last_day: dt.date | None = None) -> tuple[dt.date, dt.date]:
        """The first and last business date (inclusive) a time read for these days may fall on."""
        last_day = last_day or first_day
        return first_day - dt.timedelta(days=self.days_before), last_day + dt.timedelta(days=self.days_after)


class IntakeSettings(_Section):
    source: Literal["sql", "files", "http"] = "sql"
    freshness: FreshnessSettings = FreshnessSettings()
    plausibility: PlausibilitySettings = PlausibilitySettings()
    sql: SqlSourceSettings | None = None
    files: FileSourceSettings | None = None
    http: HttpSourceSettings | None = None

    @model_validator(mode="after")
    def _chosen_source_is_configured(self) -> IntakeSettings:
        if getattr(self, self.source) is None:
            raise ValueError(f"source is {self.source!r} but there is no {self.source}: section")
        return self


class ChannelProviderSettings(_Section):
    """Which provider sends a channel, and the Airflow Connection it reads (none: the channel's
    messages stay queued until they expire, and the log says so)."""

    provider: Literal["webhook", "aliyun", "twilio", "smtp", "none"] = "none"
    conn_id: str | None = None


class DeliverySettings(_Section):
    """The ``delivery:`` section: providers per channel, the call lists' folder, the unsubscribe
    link, and the rules of retries, leases and age (huitouke.deliver.policy.DeliveryRules)."""

    sms: ChannelProviderSettings = ChannelProviderSettings()
    email: ChannelProviderSettings = ChannelProviderSettings()
    call_list_folder: str = "data/call_lists"
    unsubscribe_conn_id: str = "huitouke_unsubscribe"  # password: the token secret
    unsubscribe_url: str | None = None  # e.g. https://shop.example/unsubscribe
    # The Aliyun report relay (huitouke.ui.aliyun_relay): its Connection (password: the push token
    # in the URL registered with Aliyun; extra pull_token: the provider's report_token); None: off.
    aliyun_relay_conn_id: str | None = None
    aliyun_relay_keep_days: int = Field(30, ge=1)  # pushed records older than this are deleted
    lease_seconds: float = Field(120, gt=0)
    max_attempts: int = Field(5, ge=1)
    backoff_seconds: float = Field(30, ge=0)
    max_backoff_seconds: float = Field(1800, ge=0)
    max_age_days: int = Field(2, ge=0)
    settle_seconds: float = Field(60, ge=0)
    max_wait_seconds: float = Field(300, ge=0)
    claim_rows: int = Field(2000, ge=1)
    claims_ahead: int = Field(1, ge=0, le=4)


class ScaleSettings(_Section):
    """The ``scale:`` section: into how many customer shards the daily run splits its segment,
    planning, rendering and delivery work (huitouke.shards; one mapped task per shard)."""

    shards: int = Field(1, ge=1, le=4096)


def _shop_time(value: Any) -> Any:
    """A time of day written ``"HH:MM"`` (quoted: YAML reads 10:30 unquoted as a number)."""
    if value is None or isinstance(value, dt.time):
        return value
    if not isinstance(value, str):
        raise ValueError(f'expected a time of day in quotes, e.g. "10:30", got {value!r}')
    try:
        return dt.time.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f'expected a time of day as "HH:MM", got {value!r}') from None


class AlertSettings(_Section):
    """Where alerts go (huitouke.ops.alerts): a webhook (an HTTP Connection receiving JSON) or
    e-mail (an SMTP Connection, to the ops team's addresses), or nowhere but the log."""

    notifier: Literal["webhook", "email", "none"] = "none"
    conn_id: str = "huitouke_alerts"
    to: list[str] = Field(default_factory=list)  # email: the ops team's addresses
    from_email: str | None = None  # email: else the SMTP Connection's extra from_email
    # A day's delivery (per channel) alerts when more than this share of the messages it attempted
    # failed, once it attempted at least min_attempted.
    max_failed_share: float = Field(0.2, ge=0, le=1)
    min_attempted: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _email_has_recipients(self) -> AlertSettings:
        if self.notifier == "email" and not self.to:
            raise ValueError("notifier is email but there is no to: (the ops team's addresses)")
        return self


class DeadlineSettings(_Section):
    """Shop times on the morning after the business day (null: no such deadline)."""

    run_finished_by: dt.time | None = dt.time(14, 0)
    sending_started_by: dt.time | None = dt.time(10, 30)

    _times = field_validator("run_finished_by", "sending_started_by", mode="before")(_shop_time)


class TimeoutSettings(_Section):
    """Each task's ``execution_timeout`` in minutes: a hung call cannot hold a worker forever."""

    task_minutes: float = Field(60, gt=0)
    # Delivery drains until the send window closes: at least the window's length, plus the
    # settle time of the last unknowns.
    deliver_minutes: float = Field(780, gt=0)


class OperationsSettings(_Section):
    """The ``operations:`` section (docs/operations.md)."""

    alerts: AlertSettings = AlertSettings()
    deadlines: DeadlineSettings = DeadlineSettings()
    timeouts: TimeoutSettings = TimeoutSettings()
    # The Airflow pool the delivery tasks take a slot of instead of the store's (null: the
    # store's pool, which an embedded SQLite store needs: one writer at a time). With PostgreSQL,
    # huitouke_send: hours of sending then never hold the store pool's slots the other writers need.
    send_pool: str | None = None
    # Delivery tasks of one run sending at once (max_active_tis_per_dagrun).
    send_tasks_per_run: int = Field(3, ge=1)


class Settings(_Section):
    shop: ShopSettings = ShopSettings()
    store: StoreSettings = StoreSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    intake: IntakeSettings
    delivery: DeliverySettings = DeliverySettings()
    scale: ScaleSettings = ScaleSettings()
    operations: OperationsSettings = OperationsSettings()

    @model_validator(mode="after")
    def _delivery_fits_its_timeout(self) -> Settings:
        d, minutes = self.delivery, self.operations.timeouts.deliver_minutes
        least = d.lease_seconds + d.settle_seconds + d.max_wait_seconds
        if minutes * 60 <= least:
            raise ValueError(
                f"operations.timeouts.deliver_minutes ({minutes:g}) must exceed delivery's own waits: "
                f"lease_seconds + settle_seconds + max_wait_seconds = {least:g} s"
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.shop.timezone)


def describe_path(path: Path) -> str:
    """The path as a user would type it: relative to the project when inside it."""
    try:
        return str(path.relative_to(project_home()))
    except ValueError:
        return str(path)


def validation_items(error: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """Each problem of a validation error as (field path, message), in the user's words."""
    items = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not str(part).startswith("function-"))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (check the spelling)"
        items.append((loc, message))
    return items


def compose_yaml(source: str | None) -> yaml.Node | None:
    """The YAML text's node tree (for line numbers), or None when there is none to have."""
    if source is None:
        return None
    try:
        return yaml.compose(source)
    except yaml.YAMLError:
        return None


def yaml_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML key or item on the path ``loc`` (None when unknown)."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(
                (kv for kv in node.value if isinstance(kv[0], yaml.ScalarNode) and kv[0].value == str(part)),
                None,
            )
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def located_error(where: str, source: str | None, items: list[tuple[tuple[Any, ...], str]]) -> ConfigError:
    """One line per (field path, message): ``file (line N): dotted.field: message``, the line
    found in the YAML text ``source`` when it can be."""
    root = compose_yaml(source)
    out = []
    for loc, message in items:
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        line = yaml_line(root, loc)
        at = f"{where} (line {line})" if line else where
        out.append(f"{at}: {dotted}: {message}")
    return ConfigError("\n".join(out))


def parse_settings(data: Any, where: str, source: str | None = None) -> Settings:
    """Validate already-loaded YAML data; errors name ``where``, the line (when ``source``, the
    YAML text, is given) and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections (shop, store, schedule, intake)")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise located_error(where, source, validation_items(exc)) from None


class StrictYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (merge keys ``<<`` may
    still be overridden) and reads an impossible date as its text (see the module docstring)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:  # 2025-13-45: a date's shape, not a date
            return self.construct_scalar(node)


StrictYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", StrictYamlLoader.construct_yaml_timestamp)


def _refuse_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:  # an unhashable key: the constructor says so
            continue
        if first is not key_node:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate key {key!r} (first written on line {first.start_mark.line + 1}): "
                "keep one, the other would be ignored",
                key_node.start_mark,
            )


def parse_yaml(text: str, where: str) -> Any:
    """YAML text read by :class:`StrictYamlLoader`; a mistake names ``where``, the line and column."""
    try:
        return yaml.load(text, Loader=StrictYamlLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{where}{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


def read_text(path: Path) -> str:
    """A configuration file's text (UTF-8); a missing, unreadable or non-UTF-8 file is a ConfigError."""
    where = describe_path(path)
    if path.is_dir():
        raise ConfigError(f"{where}: a folder, not a file")
    if not path.is_file():
        raise ConfigError(f"{where}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (undecodable byte at position {exc.start})") from None
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read it: {(exc.strerror or type(exc).__name__).lower()}"
        ) from None


def load_yaml(path: Path) -> Any:
    """Read a YAML file with :class:`StrictYamlLoader`; a mistake names the file, line and column."""
    return parse_yaml(read_text(path), describe_path(path))


@lru_cache(maxsize=16)
def _parsed(parse: Callable[[Any, str, str], Any], path: str, mtime_ns: int) -> Any:
    del mtime_ns  # part of the cache key only: an edited file is read again
    p = Path(path)
    text = read_text(p)
    where = describe_path(p)
    return parse(parse_yaml(text, where), where, text)


def load_validated(path: Path, parse: Callable[[Any, str, str], T]) -> T:
    """``parse(data, where, source)`` of a YAML file, read once until the file changes (every
    configuration file goes through here: settings, segments, playbook)."""
    p = path.resolve()
    mtime = p.stat().st_mtime_ns if p.exists() else 0
    return _parsed(parse, str(p), mtime)


def load_settings(path: Path | None = None) -> Settings:
    """The validated settings from ``path`` (default :func:`config_path`)."""
    return load_validated(path or config_path(), parse_settings)
