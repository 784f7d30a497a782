"""Order source: a paginated JSON HTTP API (a shop system, an ERP, a middleware service).

Transient failures (timeouts, 429, 5xx) are retried with backoff by urllib3 so one flaky
night does not fail the daily run; anything else raises an error that names the URL without
its query string, because query strings often carry tokens. Values stay as the JSON gave them;
validation parses them. This module does not know about Airflow: the caller turns a Connection
into ``base_url``, ``headers`` and ``auth``, and the settings into :class:`HttpOptions`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from huitouke.intake.mappings import (
    OUTPUT_COLUMNS,
    SOURCE_REF_COLUMN,
    canonical_frame,
    check_required_seen,
    get_path,
    map_record,
    resolve_mapping,
)
from huitouke.pii import get_logger
from huitouke.records import LINE_COLUMNS

log = get_logger(__name__)

RETRY_STATUSES: tuple[int, ...] = (429, 500, 502, 503, 504)
PAGINATIONS = ("page", "cursor", "next_url")
TIME_FORMATS = ("iso", "local", "epoch")


class HttpSourceError(RuntimeError):
    """The API could not be read. ``url`` never contains the query string or credentials."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


def safe_url(url: str) -> str:
    """scheme://host/path only: user:password@ and ?token=... must not reach logs or errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def build_session(max_retries: int = 5, backoff_factor: float = 0.5) -> requests.Session:
    """A session that retries GETs on connection errors, timeouts, 429 and 5xx, honouring Retry-After."""
    retry = Retry(
        total=max_retries,
        backoff_factor=backoff_factor,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last response so the error can name its status
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _describe(exc: requests.RequestException) -> str:
    """What went wrong, without str(exc): urllib3 messages embed the full URL with its query."""
    reason: BaseException | None = exc
    if exc.args and isinstance(exc.args[0], MaxRetryError):
        reason = exc.args[0].reason
    name = type(reason).__name__ if reason is not None else type(exc).__name__
    if "Timeout" in name:
        return f"timed out ({name})"
    return name


@dataclass(frozen=True)
class HttpOptions:
    """How the API is asked for a day's orders: the fields of the settings' ``intake.http`` section
    (:class:`huitouke.config.HttpSourceSettings`, same names and defaults; its ``timeout_seconds``
    becomes ``timeout``), plus what only code and tests set (backoff, page limit, first page number,
    the zone of "local" times)."""

    endpoint: str = "/orders"
    params: Mapping[str, Any] = field(default_factory=dict)
    start_param: str = "updated_from"
    end_param: str = "updated_to"
    time_format: str = "iso"
    pagination: str = "page"
    page_param: str = "page"
    page_size_param: str | None = "page_size"
    page_size: int = 100
    records_field: str = "orders"
    cursor_field: str = "next_cursor"
    cursor_param: str = "cursor"
    next_url_field: str = "next"
    lines_field: str | None = None
    mapping: str | Mapping[str, str] = "canonical"
    timeout: float | tuple[float, float] = (5, 30)
    max_retries: int = 5
    backoff_factor: float = 0.5
    max_pages: int = 100000
    first_page: int = 1
    timezone: str | None = None

    def check(self, where: str) -> None:
        """Raise ValueError naming the config field (``where``.field) of a value that cannot work."""
        if self.pagination not in PAGINATIONS:
            raise ValueError(
                f"{where}.pagination: {self.pagination!r} is not one of {', '.join(PAGINATIONS)}"
            )
        if self.time_format not in TIME_FORMATS:
            raise ValueError(
                f"{where}.time_format: {self.time_format!r} is not one of {', '.join(TIME_FORMATS)}"
            )
        if self.page_size < 1:
            raise ValueError(f"{where}.page_size must be at least 1, got {self.page_size}")
        if self.max_pages < 1:
            raise ValueError(f"{where}.max_pages must be at least 1, got {self.max_pages}")


@dataclass
class _Walk:
    """Where a read is in the API's pages: the next request, and what pagination has seen so far."""

    url: str
    query: dict[str, Any] | None
    params: dict[str, Any]  # the day's query parameters, sent with every request we build
    seen: set[str] = field(default_factory=set)  # cursors, or URLs followed
    previous_digest: str | None = None  # of the previous page ("page" pagination)


class HttpOrderSource:
    """Reads orders from a paginated JSON API; one row per order, or per order line with ``lines_field``.

    Pagination:
      * ``page``: send page_param = 1, 2, ... until a page has fewer than page_size records.
      * ``cursor``: send the response's ``cursor_field`` back as ``cursor_param`` until it is empty.
      * ``next_url``: follow the response's ``next_url_field`` (absolute or relative, same host only).
    A repeated cursor / URL / identical page, or more than ``max_pages`` requests, raises instead of
    looping or silently truncating the day. A ``session`` passed in is used as is (no retry
    adapter is mounted on it; see :func:`build_session`); otherwise one is built per ``read``.
    ``base_url``, ``headers`` and ``auth`` come from the Connection (:func:`~huitouke.intake.sources.http_endpoint`).
    """

    name = "http"

    def __init__(
        self,
        base_url: str,
        options: HttpOptions = HttpOptions(),
        *,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        session: requests.Session | None = None,
        where: str = "intake.http",
    ) -> None:
        options.check(where)
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: base_url must start with http:// or https://")
        endpoint = options.endpoint
        self.url = base_url.rstrip("/") + "/" + endpoint.lstrip("/") if endpoint else base_url
        self.options = options
        self.headers = dict(headers or {})
        self.auth = auth
        self.session = session
        self.mapping = resolve_mapping(options.mapping, f"{where}.mapping")
        self.tz = ZoneInfo(options.timezone) if options.timezone else None
        self.where = where
        self._label = f"GET {urlsplit(self.url).path or '/'}"

    # -- request ----------------------------------------------------------------------------

    def format_time(self, moment: datetime) -> str | int:
        """start/end in the form the API expects; "local" is wall-clock time in the shop's zone."""
        if self.tz is not None:
            moment = moment.astimezone(self.tz)
        if self.options.time_format == "epoch":
            return int(moment.timestamp())
        if self.options.time_format == "local":
            return moment.strftime("%Y-%m-%d %H:%M:%S")
        return moment.isoformat()

    def _get(self, session: requests.Session, url: str, params: Mapping[str, Any] | None) -> Any:
        shown = safe_url(url)
        retries = self.options.max_retries
        try:
            response = session.get(
                url, params=params, headers=self.headers, auth=self.auth, timeout=self.options.timeout
            )
        except requests.RequestException as exc:
            raise HttpSourceError(
                f"GET {shown} failed (after up to {retries} retries): {_describe(exc)}", url=shown
            ) from None
        status = response.status_code
        if status >= 400:
            retried = f" (after up to {retries} retries)" if status in RETRY_STATUSES else ""
            raise HttpSourceError(
                f"GET {shown} returned HTTP {status} {response.reason}{retried}", shown, status
            )
        try:
            return response.json()
        except ValueError:
            content_type = response.headers.get("Content-Type", "unknown")
            raise HttpSourceError(
                f"GET {shown} returned HTTP {status} with a body that is not JSON "
                f"(Content-Type {content_type})",
                shown,
                status,
            ) from None

    def _records(self, data: Any, url: str) -> list[Any]:
        if isinstance(data, list):
            return data
        field_name = self.options.records_field
        found, value = get_path(data, field_name)
        if not found:
            keys = ", ".join(sorted(map(str, data))) if isinstance(data, Mapping) else type(data).__name__
            raise HttpSourceError(
                f"GET {safe_url(url)}: response has no {field_name!r} field "
                f"(config field {self.where}.records_field); it has: {keys}",
                safe_url(url),
            )
        if value is None:
            return []
        if not isinstance(value, list):
            raise HttpSourceError(
                f"GET {safe_url(url)}: {field_name!r} is a {type(value).__name__}, not a list",
                safe_url(url),
            )
        return value

    # -- pagination -------------------------------------------------------------------------

    def _pages(self, session: requests.Session, start: datetime, end: datetime):
        """Yield (page number, records) until the API says there is no more."""
        walk = self._first_request(start, end)
        advance = {"page": self._next_page, "cursor": self._next_cursor, "next_url": self._next_link}
        turn_page = advance[self.options.pagination]
        for number in range(1, self.options.max_pages + 1):
            data = self._get(session, walk.url, walk.query)
            records = self._records(data, walk.url)
            yield number, records
            if not turn_page(walk, data, records, number):
                return
        raise HttpSourceError(
            f"{self._label}: still more pages after max_pages={self.options.max_pages} "
            f"(config field {self.where}.max_pages); refusing to return a truncated day",
            safe_url(walk.url),
        )

    def _first_request(self, start: datetime, end: datetime) -> _Walk:
        o = self.options
        params: dict[str, Any] = {
            **o.params,
            o.start_param: self.format_time(start),
            o.end_param: self.format_time(end),
        }
        if o.page_size_param:
            params[o.page_size_param] = o.page_size
        query = {**params, o.page_param: o.first_page} if o.pagination == "page" else params
        return _Walk(url=self.url, query=query, params=params)

    def _next_page(self, walk: _Walk, data: Any, records: list[Any], number: int) -> bool:
        """``page``: the next page number, unless this page was short (or repeated the previous one)."""
        del data
        o = self.options
        if len(records) < o.page_size:
            return False
        digest = hashlib.sha256(json.dumps(records, sort_keys=True, default=str).encode()).hexdigest()
        if digest == walk.previous_digest:
            raise HttpSourceError(
                f"{self._label}: page {number} repeated the previous page; does the API read "
                f"{o.page_param!r} (config field {self.where}.page_param)?",
                safe_url(walk.url),
            )
        walk.previous_digest = digest
        walk.query = {**walk.params, o.page_param: o.first_page + number}
        return True

    def _next_cursor(self, walk: _Walk, data: Any, records: list[Any], number: int) -> bool:
        """``cursor``: send the response's cursor back, until it is empty; a repeated one raises."""
        del records
        found, cursor = self._response_field(data, self.options.cursor_field)
        if not found or cursor is None or cursor == "":
            return False
        key = json.dumps(cursor, default=str)
        if key in walk.seen:
            raise HttpSourceError(
                f"{self._label}: the API returned the same cursor twice (page {number}); stopping",
                safe_url(walk.url),
            )
        walk.seen.add(key)
        walk.query = {**walk.params, self.options.cursor_param: cursor}
        return True

    def _next_link(self, walk: _Walk, data: Any, records: list[Any], number: int) -> bool:
        """``next_url``: follow the response's link on the same host; a repeated one raises."""
        del records
        found, link = self._response_field(data, self.options.next_url_field)
        if not found or not link:
            return False
        url = walk.url
        next_url = urljoin(url, str(link))
        if urlsplit(next_url)[:2] != urlsplit(self.url)[:2]:
            # Following it would send our credentials to another host.
            raise HttpSourceError(
                f"{self._label}: next URL points to {safe_url(next_url)}, not to "
                f"{safe_url(self.url)}'s host; refusing to follow it",
                safe_url(url),
            )
        if next_url in walk.seen or next_url == url:
            raise HttpSourceError(
                f"{self._label}: the API returned the same next URL twice (page {number}); stopping",
                safe_url(url),
            )
        walk.seen.add(url)
        walk.url, walk.query = next_url, None
        return True

    @staticmethod
    def _response_field(data: Any, path: str) -> tuple[bool, Any]:
        return get_path(data, path) if isinstance(data, Mapping) else (False, None)

    # -- rows -------------------------------------------------------------------------------

    def _rows(self, record: Any, ref: str, seen: set[str], keys: set[str]) -> list[dict[str, Any]]:
        if not isinstance(record, Mapping):
            log.warning(
                "%s is a %s, not an object; passing it on empty for validation", ref, type(record).__name__
            )
            return [{SOURCE_REF_COLUMN: ref}]
        keys.update(map(str, record))
        lines_field = self.options.lines_field
        order_fields = record
        lines: Any = None
        if lines_field:
            found, lines = get_path(record, lines_field)
            if found and "." not in lines_field:
                order_fields = {k: v for k, v in record.items() if k != lines_field}
        order = map_record(order_fields, self.mapping)
        seen.update(order)
        if isinstance(lines, Mapping):
            lines = [lines]
        if not lines_field or not isinstance(lines, list) or not lines:
            return [{**order, SOURCE_REF_COLUMN: ref}]
        rows = []
        for j, line in enumerate(lines, 1):
            line_values: dict[str, Any] = {}
            if isinstance(line, Mapping):
                line_values = {k: v for k, v in map_record(line, self.mapping).items() if k in LINE_COLUMNS}
            rows.append({**order, **line_values, SOURCE_REF_COLUMN: f"{ref} line {j}"})
        return rows

    def completeness(self, start: datetime, end: datetime, max_quiet_hours: float) -> str | None:
        """None: an API gives no sign of a complete day; the floor on the day's orders decides."""
        return None

    def read(self, start: datetime, end: datetime) -> pd.DataFrame:
        """All order rows the API returns for [start, end), in API order."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("HttpOrderSource.read needs timezone-aware start and end")
        session = self.session or build_session(self.options.max_retries, self.options.backoff_factor)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        keys: set[str] = set()
        records_total = pages = 0
        try:
            for number, records in self._pages(session, start, end):
                pages = number
                records_total += len(records)
                for i, record in enumerate(records, 1):
                    rows.extend(self._rows(record, f"{self._label} page {number} item {i}", seen, keys))
        finally:
            if self.session is None:
                session.close()
        if records_total:
            check_required_seen(
                seen, self.mapping, keys, f"{self._label} (mapping from {self.where}.mapping)"
            )
        log.info("%s: %d records, %d rows in %d page(s)", self._label, records_total, len(rows), pages)
        if not rows:
            return canonical_frame()
        return canonical_frame([pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS), dtype=object)])
