"""The UI's pages the way they run: Airflow's own API app (the plugin mounted at /huitouke, the
Airflow UI at /) under uvicorn on a free port, opened in headless chromium at 1366×768.

The store holds a season's evaluations made by the daily code (``evaluate_waves`` and
``persist.write_evaluation``): large campaigns with long names and wide figures, a small one, and
``coupon_waves`` whose waves have only reached their 2-day window (its primary window is 10 days).
Checked in the browser: every verdict cell lies inside the viewport and inside its table's
scrolling box at the scroll position the page opens with; the page itself does not scroll
sideways; the coupon_waves page names the window it shows and its wave count; the results page
says why coupon_waves is not pooled; the Airflow UI's navigation shows the two entries with
distinct icons and whole, distinct labels. Screenshots go to the test's tmp dir (and to
``$HUITOUKE_UI_SCREENSHOTS`` when set, e.g. docs/ for the docs' picture).

Chromium and chromedriver are Debian's (/usr/bin/chromium, /usr/bin/chromedriver; scripts/test.sh
installs them): without them the module is skipped, and under CI=true it fails.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from huitouke.evaluate import persist
from huitouke.evaluate.verdicts import by_code
from huitouke.evaluate.waves import MessageCosts, WaveOptions, evaluate_waves
from huitouke.ui import data
from huitouke.ui.plugin import EXTERNAL_VIEWS

WIDTH, HEIGHT = 1366, 768
SEASON = date(2025, 11, 3)
AS_OF = SEASON + timedelta(days=40)
# campaign -> (waves, customers per wave, treated response, holdout response)
CAMPAIGNS = {
    "new_product_premium": (6, 3_000, 0.14, 0.09),
    "win_back": (8, 2_500, 0.05, 0.02),
    "birthday": (4, 150, 0.30, 0.10),
}
COUPON_WAVES = 5  # coupon_waves: waves due so late that only the 2-day window has matured
WINDOWS = {name: [2, 10, 30] for name in [*CAMPAIGNS, "coupon_waves"]}
PRIMARY = {**{name: 10 for name in CAMPAIGNS}, "coupon_waves": 10}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.filterwarnings(
    "ignore::jwt.warnings.InsecureKeyLengthWarning"
)  # the suite's short key


# ------------------------------------------------------------------------------- the season


def _cohort(rng, campaign: str, wave: int, due: date, n: int, rates: tuple[float, float]):
    """One wave's rows, its customers' orders and its outbox rows."""
    ids = [f"{campaign[:3]}{wave}-{due:%m%d}-{i}" for i in range(n)]
    arm = np.where(rng.random(n) < 0.1, "holdout", "treatment")
    waves = pd.DataFrame(
        {
            "campaign": campaign,
            "customer_id": ids,
            "entered_on": due,
            "wave": 1,
            "due_on": due,
            "arm": arm,
            "variant": "default",
            "kind": "marketing",
            "priority": 80,
            "outcome": np.where(arm == "treatment", "treated", "held_out"),
            "reason": None,
            "channels": "sms",
            "lifecycle": rng.choice(["new", "active", "at_risk"], n),
        }
    )
    send = pd.Timestamp(datetime.combine(due, datetime.min.time())) + pd.Timedelta(hours=1)
    bought = rng.random(n) < np.where(arm == "treatment", rates[0], rates[1])
    orders = pd.DataFrame(
        {
            "order_id": [f"o-{c}" for c in ids],
            "customer_id": ids,
            "paid_at": send + pd.to_timedelta(rng.random(n) * 12, unit="D"),
            "status": np.where(bought, "paid", "cancelled"),
            "amount_cents": rng.integers(5_000, 60_000, n),
            "categories": rng.choice(["food", "apparel", "home", "beauty"], n),
        }
    )
    treated = waves[waves["arm"] == "treatment"]
    messages = pd.DataFrame(
        {
            "campaign": campaign,
            "customer_id": treated["customer_id"],
            "entered_on": due,
            "wave": 1,
            "channel": "sms",
            "status": "sent",
            "receipt": "delivered",
            "sms_segments": 2,
            "billed_segments": 2,
        }
    )
    return waves, orders, messages


def _season() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(15)
    parts = []
    for campaign, (count, n, *rates) in CAMPAIGNS.items():
        for k in range(count):
            parts.append(_cohort(rng, campaign, k + 1, SEASON + timedelta(days=3 * k), n, tuple(rates)))
    for k in range(COUPON_WAVES):  # due 34 .. 38 days in: 2-day windows matured by AS_OF, 10-day not
        parts.append(_cohort(rng, "coupon_waves", k + 1, SEASON + timedelta(days=34 + k), 400, (0.08, 0.06)))
    return tuple(pd.concat([p[i] for p in parts], ignore_index=True) for i in range(3))


@pytest.fixture(scope="module")
def season_store(tmp_path_factory):
    """A migrated SQLite store holding the season's evaluations, written by the daily code."""
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('season') / 'crm.sqlite'}")
    upgrade(engine)
    waves, orders, messages = _season()
    options = WaveOptions(
        windows=WINDOWS,
        primary=PRIMARY,
        segment_columns=["lifecycle"],
        costs=MessageCosts(sms_segment_cents=4.5, email_cents=0.0, call_cents=300.0),
    )
    ev = evaluate_waves(waves, orders, AS_OF, messages=messages, options=options)
    with engine.begin() as conn:
        persist.write_evaluation(conn, ev, AS_OF, datetime(2025, 12, 13, 3, 0))
    yield engine
    engine.dispose()


# ------------------------------------------------------------------------------ the server


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(airflow_db, season_store) -> Iterator[tuple[str, str]]:
    """Airflow's API app with the plugin, served by uvicorn on a free port: (base URL, a JWT)."""
    import uvicorn
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    patch = pytest.MonkeyPatch()
    patch.setattr(data, "store_engine", lambda: season_store)
    app = create_app("core")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.1)
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        purge_cached_app()
        patch.undo()


# ----------------------------------------------------------------------------- the browser


def _browser_paths() -> tuple[str, str] | str:
    """(chromium, chromedriver): Debian's paths, else found on PATH; or why there is none."""
    found = []
    for path in (CHROMIUM, CHROMEDRIVER):
        where = path if os.path.exists(path) else shutil.which(Path(path).name)
        if not where:
            return f"{path} is not installed (scripts/test.sh installs chromium and chromium-driver)"
        found.append(where)
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in the venv"
    return found[0], found[1]


@pytest.fixture(scope="module")
def browser(request) -> Iterator[Any]:
    """Headless chromium with a 1366×768 viewport, logged in to Airflow (its ``_token`` cookie).
    Without a browser: skipped (before Airflow is started), or failed under CI=true."""
    paths = _browser_paths()
    if isinstance(paths, str):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"a headless browser is required under CI=true: {paths}")
        pytest.skip(paths)
    chromium, chromedriver = paths
    served = request.getfixturevalue("served")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=zh-CN"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        base, token = served
        driver.get(f"{base}/huitouke/icon-results.svg")  # a page of the origin, to set its cookie on
        driver.add_cookie({"name": "_token", "value": token, "path": "/"})
        yield driver
    finally:
        driver.quit()


def _open(browser, served, path: str) -> str:
    browser.get(f"{served[0]}{path}")
    browser.execute_script("return document.fonts.ready")
    return browser.find_element("tag name", "body").text


def _shoot(browser, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    browser.save_screenshot(str(path))
    if extra := os.environ.get("HUITOUKE_UI_SCREENSHOTS"):
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


HIDDEN_VERDICTS = """
const width = window.innerWidth, out = [];
for (const cell of document.querySelectorAll('td.verdict-cell')) {
  const r = cell.getBoundingClientRect();
  const wrap = cell.closest('.table-wrap');
  const right = wrap ? Math.min(width, wrap.getBoundingClientRect().right) : width;
  if (r.left < 0 || r.right > right + 0.5 || r.width < 40)
    out.push([cell.closest('table').closest('section, div, main').id || '', cell.innerText, r.left, r.right, right]);
}
return out;
"""


def _layout(browser) -> dict[str, Any]:
    return browser.execute_script(
        "return {inner: window.innerWidth, page: document.documentElement.scrollWidth,"
        " verdicts: document.querySelectorAll('td.verdict-cell').length, scrollX: window.scrollX}"
    )


# ---------------------------------------------------------------------------------- the tests


def test_the_results_page_shows_every_verdict_without_scrolling(browser, served, tmp_path):
    text = _open(browser, served, "/huitouke/results")
    layout = _layout(browser)
    assert layout["inner"] == WIDTH and layout["scrollX"] == 0
    assert layout["page"] <= WIDTH, f"the page scrolls sideways: {layout}"
    # pooled: one row per campaign but coupon_waves; per wave: every primary-window ITT row
    assert layout["verdicts"] == len(CAMPAIGNS) + sum(c[0] for c in CAMPAIGNS.values())
    assert browser.execute_script(HIDDEN_VERDICTS) == []
    # birthday: 549 against 51 customers, p = 0.015, an MDE of 16 points: a lift too small to size
    birthday = next(r for r in browser.find_elements("css selector", "table tr") if "birthday" in r.text)
    verdict = birthday.find_element("css selector", "span.verdict")
    assert verdict.text.splitlines()[0] == "likely lift; the test was too small to size it", birthday.text
    assert verdict.get_attribute("title") == by_code("likely_lift").explanation
    assert "What the verdicts mean" in text
    _shoot(browser, tmp_path, "ui-results")


def test_the_results_page_says_why_coupon_waves_is_not_pooled(browser, served):
    _open(browser, served, "/huitouke/results")
    pooled = browser.find_elements("css selector", "table")[0].text
    assert "coupon_waves" not in pooled and "new_product_premium" in pooled
    why = browser.find_element("id", "not-pooled-coupon_waves").text
    assert why.startswith(
        f"coupon_waves is not in this table: none of its {COUPON_WAVES} evaluated wave(s) has reached "
        "its 10-day primary window yet (evaluated so far at 2 d: see its page)."
    ), why


def test_the_coupon_waves_page_names_its_window_and_counts_its_waves(browser, served, tmp_path):
    text = _open(browser, served, "/huitouke/campaign?name=coupon_waves")
    assert "None-day" not in text and " 0 waves" not in text
    assert "Breakdowns, 2-day window (ITT)" in text
    assert "Waves over time, 2-day window (ITT)" in text
    assert (
        f"None of the {COUPON_WAVES} evaluated wave(s) has reached the 10-day primary window yet: "
        "this page shows the longest window evaluated so far, 2 days."
    ) in text
    assert f"All {COUPON_WAVES} evaluated waves pooled, per window" in text
    assert f"{COUPON_WAVES} of {COUPON_WAVES} evaluated waves at 2 days" in text
    assert browser.execute_script(HIDDEN_VERDICTS) == []
    assert _layout(browser)["page"] <= WIDTH
    _shoot(browser, tmp_path, "ui-coupon-waves")
    one = _open(
        browser, served, f"/huitouke/campaign?name=coupon_waves&wave=1&due={SEASON + timedelta(days=34)}"
    )
    assert "Breakdowns, 2-day window (ITT)" in one and "What they bought, 2-day window" in one
    assert "None-day" not in one and browser.execute_script(HIDDEN_VERDICTS) == []


def test_a_campaign_page_shows_every_verdict_without_scrolling(browser, served, tmp_path):
    text = _open(browser, served, "/huitouke/campaign?name=new_product_premium")
    assert "Breakdowns, 10-day window (ITT)" in text and "has reached" not in text
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    assert browser.execute_script(HIDDEN_VERDICTS) == []
    assert _layout(browser)["page"] <= WIDTH
    _shoot(browser, tmp_path, "ui-campaign")


def test_the_pages_own_navigation_has_distinct_labels(browser, served):
    _open(browser, served, "/huitouke/results")
    labels = [a.text for a in browser.find_elements("css selector", "header nav a")]
    assert len(labels) == len(set(labels)) == 2, labels


NAV_LABELS = tuple(v["name"] for v in EXTERNAL_VIEWS)
NAV_ENTRIES = """
const out = [];
for (const label of arguments[0]) {
  for (const a of document.querySelectorAll(`[aria-label="${label}"]`)) {
    const img = a.querySelector('img');
    const text = [...a.querySelectorAll('*')].filter(e => e.children.length === 0 && e.textContent.trim()).pop();
    out.push({label, icon: img ? img.getAttribute('src') : null, text: text ? text.textContent : null,
              cut: text ? text.scrollWidth > text.clientWidth : null});
  }
}
return out;
"""


def test_airflows_navigation_shows_two_distinct_whole_entries(browser, served, tmp_path):
    """In the Airflow UI itself: two top-level entries, each its own icon and its whole label."""
    _open(browser, served, "/plugin/huitouke-results")
    deadline = time.monotonic() + 60
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len({e["label"] for e in entries}) < 2:
        time.sleep(0.5)
        entries = browser.execute_script(NAV_ENTRIES, list(NAV_LABELS))
    _shoot(browser, tmp_path, "ui-in-airflow")
    by_label = {e["label"]: e for e in entries}
    assert len(entries) == len(by_label) == 2, entries
    assert by_label[NAV_LABELS[0]]["icon"] != by_label[NAV_LABELS[1]]["icon"], entries
    assert all(e["text"] == e["label"] and e["cut"] is False for e in by_label.values()), entries
    # the page inside the UI's frame: its verdicts visible too
    frame = browser.find_element("css selector", "iframe")
    browser.switch_to.frame(frame)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not browser.find_elements("css selector", "td.verdict-cell"):
            time.sleep(0.5)
        assert browser.find_elements("css selector", "td.verdict-cell")
        assert browser.execute_script(HIDDEN_VERDICTS) == []
    finally:
        browser.switch_to.default_content()
