"""HTTP API source against a real local server: pagination modes, retries, errors, line explosion."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest

from huitouke.intake.http_api import HttpOptions, HttpOrderSource, HttpSourceError
from huitouke.intake.mappings import OUTPUT_COLUMNS

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2025, 12, 12, tzinfo=SHANGHAI)
END = START + timedelta(days=1)

# A route gets (query, call number for this path) and returns (status, JSON body, extra headers).
Route = Callable[[dict[str, str], int], tuple[int, Any, dict[str, str]]]


class FakeApi:
    """Records every request and answers from ``routes``; unknown paths get a 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.headers: list[dict[str, str]] = []
        self.base_url = ""
        self._lock = threading.Lock()

    def calls(self, path: str) -> list[dict[str, str]]:
        return [query for p, query in self.requests if p == path]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with self._lock:
            self.requests.append((parts.path, query))
            self.headers.append(dict(handler.headers.items()))
            number = sum(1 for p, _ in self.requests if p == parts.path)
        route = self.routes.get(parts.path)
        status, body, headers = route(query, number) if route else (404, {"error": "not found"}, {})
        payload = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)


@pytest.fixture
def api():
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            fake.handle(self)

        def log_message(self, format, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def order(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "order_id": f"O{n}",
        "customer_id": f"c{n}",
        "paid_at": "2025-12-12T10:00:00+08:00",
        "amount": 10 * n,
        "status": "paid",
        **extra,
    }


def source(api: FakeApi, headers: Any = None, auth: Any = None, **options: Any) -> HttpOrderSource:
    options.setdefault("backoff_factor", 0)
    options.setdefault("timeout", (2, 2))
    return HttpOrderSource(api.base_url, HttpOptions(**options), headers=headers, auth=auth)


def test_page_pagination_reads_until_a_short_page(api):
    pages = {1: [order(1), order(2)], 2: [order(3), order(4)], 3: [order(5)]}
    api.routes["/orders"] = lambda q, n: (200, {"orders": pages[int(q["page"])]}, {})

    df = source(api, page_size=2).read(START, END)

    assert tuple(df.columns) == OUTPUT_COLUMNS
    assert list(df["order_id"]) == ["O1", "O2", "O3", "O4", "O5"]
    assert [q["page"] for q in api.calls("/orders")] == ["1", "2", "3"]
    assert all(q["page_size"] == "2" for q in api.calls("/orders"))
    assert df.iloc[4]["_source_ref"] == "GET /orders page 3 item 1"
    assert df.iloc[0]["amount"] == 10  # JSON numbers stay numbers
    assert df.iloc[0]["email"] is None


def test_page_pagination_stops_on_an_empty_page(api):
    pages = {1: [order(1), order(2)], 2: []}
    api.routes["/orders"] = lambda q, n: (200, {"orders": pages[int(q["page"])]}, {})
    assert len(source(api, page_size=2).read(START, END)) == 2
    assert len(api.calls("/orders")) == 2


def test_page_pagination_that_ignores_the_page_param_is_an_error(api):
    api.routes["/orders"] = lambda q, n: (200, {"orders": [order(1), order(2)]}, {})
    with pytest.raises(HttpSourceError, match="repeated the previous page"):
        source(api, page_size=2).read(START, END)


def test_cursor_pagination_follows_cursor_until_null_with_dotted_fields(api):
    pages = {
        None: ([order(1), order(2)], "abc"),
        "abc": ([order(3)], "def"),
        "def": ([order(4)], None),
    }

    def route(q, n):
        records, cursor = pages[q.get("cursor")]
        return 200, {"data": {"orders": records}, "meta": {"next_cursor": cursor}}, {}

    api.routes["/v2/orders"] = route
    df = source(
        api,
        endpoint="v2/orders",
        pagination="cursor",
        records_field="data.orders",
        cursor_field="meta.next_cursor",
    ).read(START, END)

    assert list(df["order_id"]) == ["O1", "O2", "O3", "O4"]
    assert [q.get("cursor") for q in api.calls("/v2/orders")] == [None, "abc", "def"]
    assert all(q["updated_from"] == "2025-12-12T00:00:00+08:00" for q in api.calls("/v2/orders"))


def test_cursor_repeated_is_an_error_not_an_infinite_loop(api):
    api.routes["/orders"] = lambda q, n: (200, {"orders": [order(n)], "next_cursor": "same"}, {})
    with pytest.raises(HttpSourceError, match="same cursor twice"):
        source(api, pagination="cursor").read(START, END)
    assert len(api.calls("/orders")) == 2


def test_max_pages_guard_raises_instead_of_truncating(api):
    api.routes["/orders"] = lambda q, n: (200, {"orders": [order(n)], "next_cursor": f"c{n}"}, {})
    with pytest.raises(HttpSourceError, match="max_pages=3"):
        source(api, pagination="cursor", max_pages=3).read(START, END)
    assert len(api.calls("/orders")) == 3


def test_next_url_pagination_follows_relative_and_absolute_links(api):
    def first(q, n):
        return 200, {"orders": [order(1)], "next": "/orders/more?token=p2"}, {}

    def more(q, n):
        if q["token"] == "p2":
            return 200, {"orders": [order(2)], "next": f"{api.base_url}/orders/more?token=p3"}, {}
        return 200, {"orders": [order(3)], "next": None}, {}

    api.routes["/orders"] = first
    api.routes["/orders/more"] = more
    df = source(api, pagination="next_url").read(START, END)

    assert list(df["order_id"]) == ["O1", "O2", "O3"]
    assert [q["token"] for q in api.calls("/orders/more")] == ["p2", "p3"]
    assert "updated_from" in api.calls("/orders")[0]  # only the first request carries our params
    assert list(df["_source_ref"]) == [f"GET /orders page {n} item 1" for n in (1, 2, 3)]


def test_next_url_to_another_host_is_refused(api):
    api.routes["/orders"] = lambda q, n: (
        200,
        {"orders": [order(1)], "next": "http://evil.example/steal"},
        {},
    )
    with pytest.raises(HttpSourceError, match="refusing to follow"):
        source(api, pagination="next_url").read(START, END)


def test_503_is_retried_then_succeeds(api):
    def route(q, n):
        if n == 1:
            return 503, {"error": "busy"}, {}
        return 200, {"orders": [order(1)]}, {}

    api.routes["/orders"] = route
    df = source(api).read(START, END)
    assert list(df["order_id"]) == ["O1"]
    assert len(api.calls("/orders")) == 2


def test_429_with_retry_after_zero_is_retried(api):
    def route(q, n):
        if n == 1:
            return 429, {"error": "slow down"}, {"Retry-After": "0"}
        return 200, {"orders": [order(1)]}, {}

    api.routes["/orders"] = route
    started = time.monotonic()
    assert len(source(api).read(START, END)) == 1
    assert len(api.calls("/orders")) == 2
    assert time.monotonic() - started < 2


def test_persistent_500_fails_after_retries_with_status(api):
    api.routes["/orders"] = lambda q, n: (500, {"error": "boom"}, {})
    with pytest.raises(HttpSourceError, match="HTTP 500") as err:
        source(api, max_retries=2).read(START, END)
    assert err.value.status == 500
    assert len(api.calls("/orders")) == 3


def test_404_is_a_clear_error_without_retry_or_secrets(api):
    with pytest.raises(HttpSourceError) as err:
        source(api, endpoint="/missing", params={"token": "s3cret"}).read(START, END)
    message = str(err.value)
    assert f"GET {api.base_url}/missing returned HTTP 404" in message
    assert "s3cret" not in message and "?" not in message
    assert err.value.status == 404
    assert len(api.calls("/missing")) == 1


def test_read_timeout_is_retried_then_raises(api):
    def slow(q, n):
        time.sleep(0.5)
        return 200, {"orders": []}, {}

    api.routes["/orders"] = slow
    started = time.monotonic()
    with pytest.raises(HttpSourceError, match="timed out"):
        source(api, timeout=(1, 0.1), max_retries=1, params={"token": "s3cret"}).read(START, END)
    assert time.monotonic() - started < 1.5
    assert len(api.calls("/orders")) == 2


def test_nested_lines_are_exploded_one_row_per_line(api):
    records = [
        order(
            1,
            items=[
                {"sku": "S1", "product_name": "Rice", "quantity": 1, "line_amount": 6, "category": "food"},
                {"sku": "S2", "product_name": "Soap", "quantity": "2", "line_amount": "4"},
            ],
        ),
        order(2, items=[]),
        order(3),
    ]
    api.routes["/orders"] = lambda q, n: (200, {"orders": records}, {})
    df = source(api, lines_field="items").read(START, END)

    assert list(df["order_id"]) == ["O1", "O1", "O2", "O3"]
    assert list(df["sku"]) == ["S1", "S2", None, None]
    assert list(df["quantity"]) == [1, "2", None, None]
    assert list(df["amount"]) == [10, 10, 20, 30]  # order fields repeated on every line
    assert df.iloc[1]["category"] is None
    assert list(df["_source_ref"]) == [
        "GET /orders page 1 item 1 line 1",
        "GET /orders page 1 item 1 line 2",
        "GET /orders page 1 item 2",
        "GET /orders page 1 item 3",
    ]


def test_inline_mapping_with_dotted_paths_for_nested_fields(api):
    records = [
        {
            "id": ' ="77" ',
            "buyer": {"id": "u1", "phone": "13800000000"},
            "paid": "2025-12-12 10:00:00",
            "total": "abc",
            "state": "TRADE_FINISHED",
            "lines": [{"code": "S1", "amount": 5, "total": "should not override"}],
        }
    ]
    api.routes["/orders"] = lambda q, n: (200, records, {})  # a top-level list is accepted
    mapping = {
        "id": "order_id",
        "buyer.id": "customer_id",
        "buyer.phone": "phone",
        "paid": "paid_at",
        "total": "amount",
        "state": "status",
        "code": "sku",
        "amount": "line_amount",
    }
    df = source(api, mapping=mapping, lines_field="lines").read(START, END)
    row = df.iloc[0]
    assert row["order_id"] == "77" and row["customer_id"] == "u1" and row["phone"] == "13800000000"
    assert row["amount"] == "abc" and row["status"] == "TRADE_FINISHED"
    assert row["sku"] == "S1" and row["line_amount"] == 5


def test_mapping_that_finds_no_required_field_is_a_config_error(api):
    api.routes["/orders"] = lambda q, n: (200, {"orders": [{"id": 1, "total": 3}]}, {})
    with pytest.raises(ValueError, match=r"order_id, customer_id, paid_at, amount, status"):
        source(api).read(START, END)


def test_missing_records_field_names_the_config_field(api):
    api.routes["/orders"] = lambda q, n: (200, {"data": []}, {})
    with pytest.raises(
        HttpSourceError, match=r"no 'orders' field \(config field intake.http.records_field\)"
    ):
        source(api).read(START, END)


@pytest.mark.parametrize(
    ("time_format", "expected_from", "expected_to"),
    [
        ("iso", "2025-12-12T00:00:00+08:00", "2025-12-13T00:00:00+08:00"),
        ("local", "2025-12-12 00:00:00", "2025-12-13 00:00:00"),
        ("epoch", str(int(START.timestamp())), str(int(END.timestamp()))),
    ],
)
def test_start_and_end_are_sent_in_the_configured_format(api, time_format, expected_from, expected_to):
    api.routes["/orders"] = lambda q, n: (200, {"orders": []}, {})
    df = source(api, time_format=time_format, params={"shop": "42"}, start_param="from", end_param="to").read(
        START, END
    )
    assert df.empty and tuple(df.columns) == OUTPUT_COLUMNS
    (query,) = api.calls("/orders")
    assert query == {
        "shop": "42",
        "from": expected_from,
        "to": expected_to,
        "page": "1",
        "page_size": "100",
    }


def test_headers_and_auth_are_sent(api):
    class Auth:
        def __call__(self, request):
            request.headers["X-Signed"] = "yes"
            return request

    api.routes["/orders"] = lambda q, n: (200, {"orders": []}, {})
    source(api, headers={"Authorization": "Bearer t"}, auth=Auth()).read(START, END)
    (headers,) = api.headers
    assert headers["Authorization"] == "Bearer t" and headers["X-Signed"] == "yes"


def test_invalid_config_fails_at_construction():
    with pytest.raises(ValueError, match="intake.http.pagination"):
        HttpOrderSource("http://127.0.0.1:1", HttpOptions(pagination="offset"))
    with pytest.raises(ValueError, match="intake.http.time_format"):
        HttpOrderSource("http://127.0.0.1:1", HttpOptions(time_format="unix"))
    with pytest.raises(ValueError, match="intake.http.mapping"):
        HttpOrderSource("http://127.0.0.1:1", HttpOptions(mapping={"x": "nope"}))


def test_the_options_default_as_the_settings_do():
    """HttpOptions carries the intake.http settings under their names, with the same defaults."""
    from dataclasses import fields

    from huitouke.config import HttpSourceSettings
    from huitouke.intake.sources import http_options

    settings = HttpSourceSettings()
    options = http_options(settings)
    shared = {f.name for f in fields(HttpOptions)} & set(HttpSourceSettings.model_fields)
    assert shared == set(HttpSourceSettings.model_fields) - {"conn_id", "timeout_seconds"}
    assert all(getattr(options, name) == getattr(HttpOptions(), name) for name in shared)
    assert options.timeout == (10.0, settings.timeout_seconds)
