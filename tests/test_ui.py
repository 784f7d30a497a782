"""The UI plugin (huitouke.ui): Airflow loads it through the entry point, its pages show the stored
plans and evaluations (SQLite and PostgreSQL) with no personal data, say what to do when the store
is empty or behind, and require an authenticated Airflow user inside Airflow's own API app."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from datetime import date, datetime, timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from store_rows import add_customer, add_order, segments_of

from huitouke.campaigns import assign_arms, load_playbook
from huitouke.campaigns.daily import run_day as plan_campaigns
from huitouke.evaluate.daily import run_day as evaluate_day
from huitouke.render.daily import run_day as render_campaign
from huitouke.store.connection import make_engine
from huitouke.store.migrate import head_revision, upgrade
from huitouke.store.schema import evaluations
from huitouke.ui import data

D0 = date(2025, 6, 2)
NOW = datetime(2025, 6, 3, 0, 5)
N = 80  # customers whose first order is on D0: all enter thank_you
TREATED_RESPONDERS, HOLDOUT_RESPONDERS = 6, 1


def phone(i: int) -> str:
    return f"1390077{i:04d}"


def name(i: int) -> str:
    return f"欧阳娜娜{i}"


def email(i: int) -> str:
    return f"buyer{i}@shop-example.cn"


class Shop:
    """A small shop written into the store, then planned, rendered and evaluated by the daily code."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.playbook = load_playbook()
        holdout = self.playbook.campaigns["thank_you"].holdout
        self.ids = [f"u{i:03d}" for i in range(N)]
        self.arm = dict(
            zip(self.ids, assign_arms("thank_you", self.ids, holdout.share, holdout.salt), strict=True)
        )
        self.treated = [c for c in self.ids if self.arm[c] == "treatment"]
        self.holdout = [c for c in self.ids if self.arm[c] == "holdout"]
        assert len(self.holdout) > HOLDOUT_RESPONDERS and len(self.treated) > TREATED_RESPONDERS + 1
        self.unreachable = self.treated[-1]  # no phone, no e-mail: suppressed (no_contact)
        self.orders = 0

    def customer(self, i: int, cid: str) -> None:
        reachable = cid != self.unreachable
        add_customer(
            self.engine,
            cid,
            name=name(i),
            phone=phone(i) if reachable else None,
            email=email(i) if reachable else None,
        )

    def buy(self, cid: str, on: date, cny: float) -> None:
        self.orders += 1
        add_order(self.engine, f"o{self.orders}", cid, on, cny)

    def segments(self, on: date) -> pd.DataFrame:
        return segments_of(self.engine, self.playbook, on)

    def run(self) -> None:
        for i, cid in enumerate(self.ids):
            self.customer(i, cid)
            self.buy(cid, D0, 120)
        plan_campaigns(self.engine, D0, self.playbook, self.segments(D0), now=NOW)
        for campaign in ("thank_you", "care_tips"):
            render_campaign(self.engine, D0, campaign, self.playbook, now=NOW)
        # Sent D0 + 1, 09:00 Shanghai (01:00 UTC); orders are stored at 03:00 UTC of their day:
        # these fall in the 10-day window (thank_you's primary) and not in the 2-day one.
        for cid in self.treated[:TREATED_RESPONDERS]:
            self.buy(cid, D0 + timedelta(days=4), 80)
        for cid in self.holdout[:HOLDOUT_RESPONDERS]:
            self.buy(cid, D0 + timedelta(days=5), 50)
        for day in (3, 11):
            evaluate_day(self.engine, D0 + timedelta(days=day), self.playbook, "Asia/Shanghai", now=NOW)


@pytest.fixture
def shop(store_engine, monkeypatch) -> Shop:
    shop = Shop(store_engine)
    shop.run()
    monkeypatch.setattr(data, "store_engine", lambda: store_engine)
    return shop


@pytest.fixture(scope="module")
def ui_app():
    from huitouke.ui.app import create_app

    return create_app(authenticate=False)  # the pages alone; authentication is tested below


@pytest.fixture
def client(ui_app) -> TestClient:
    return TestClient(ui_app)


def text_of(page: str) -> str:
    """The visible text: tags dropped, entities decoded, whitespace squeezed."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def row_with(page: str, *needles: str) -> str:
    """The text of the one table row containing every needle."""
    rows = [text_of(r).strip() for r in re.findall(r"<tr[ >].*?</tr>", page, flags=re.S)]
    matches = [r for r in rows if all(n in r for n in needles)]
    assert len(matches) == 1, (needles, matches or rows[:5])
    return matches[0]


def assert_no_personal_data(page: str) -> None:
    for i in range(N):
        assert phone(i) not in page and name(i) not in page and email(i) not in page
    assert "1390077" not in page and "欧阳娜娜" not in page and "shop-example" not in page


# ------------------------------------------------------------------------------------- the pages


def test_plans_page_shows_the_days_campaign_table(shop, client):
    page = client.get("/").text
    assert f"Campaign plans 每日活动计划 · {D0}" in page
    n1, n0 = len(shop.treated), len(shop.holdout)
    row = row_with(page, "thank_you")
    # campaign, priority, entered, of which holdout, deferred, due, treated, held out, suppressed
    # (reasons), exited (reasons), messages planned, queued, status
    assert row.split() == [
        "thank_you",
        "marketing",
        "80",
        f"{N}",
        f"{n0}",
        "0",
        f"{N}",
        f"{n1 - 1}",
        f"{n0}",
        "1",
        "无联系方式",
        "no_contact",
        "1",
        f"{N}",
        "波次完成",
        "completed",
        f"{N}",
        f"{n1 - 1}",
        f"{n1 - 1}",
        "已入队",
        "queued",
    ]
    assert "campaign?name=thank_you" in page
    assert client.get("/", params={"day": D0.isoformat()}).text == page
    assert_no_personal_data(page)


def test_plans_page_tells_when_the_day_asked_for_has_no_plan(shop, client):
    page = client.get("/", params={"day": "2024-01-01"}).text
    assert "No plan is stored for 2024-01-01: showing the latest business day." in page
    assert f"· {D0}" in page
    assert "showing the latest" in client.get("/", params={"day": "<b>x</b>"}).text
    assert "<b>x</b>" not in client.get("/", params={"day": "<b>x</b>"}).text


def test_results_page_shows_each_wave_and_the_pooled_campaign(shop, client):
    n1, n0 = len(shop.treated), len(shop.holdout)
    x1, x0 = TREATED_RESPONDERS, HOLDOUT_RESPONDERS
    response, natural = f"{100 * x1 / n1:.2f}%", f"{100 * x0 / n0:.2f}%"
    lift = f"{100 * (x1 / n1 - x0 / n0):+.2f}"
    with shop.engine.connect() as conn:
        stored = (
            conn.execute(
                select(evaluations)
                .where(evaluations.c.campaign == "thank_you")
                .where(evaluations.c.window_days == 10)
                .where(evaluations.c.view == "itt")
            )
            .mappings()
            .one()
        )
    assert stored["primary_window"] and (stored["customers"], stored["responders"]) == (n1, x1)

    page = client.get("/results").text
    pooled = row_with(page, "thank_you", f"{D0} … {D0}")
    assert pooled.startswith(
        f"thank_you 1 10 d {D0} … {D0} {n1} {n0} {x1} / {x0} {response} {natural} {lift} ["
    )
    assert "too few customers to tell" in pooled  # a wave of 80 customers cannot tell
    wave = row_with(page, "thank_you", "10 d*")
    assert wave.startswith(f"thank_you 1 {D0} 10 d* itt {n1} {n0} {x1} / {x0} {response} {natural} {lift} [")
    low, high = 100 * stored["lift_low"], 100 * stored["lift_high"]
    assert f"{lift} [{low:+.2f}, {high:+.2f}]" in wave
    assert f"{stored['cost_cents'] / 100:,.2f}" in wave and f"{stored['p_value']:.3f}" in wave
    # The verdict right after the MDE (before the money columns: visible without scrolling), in
    # the words of huitouke.evaluate.verdicts, the evaluation day last.
    assert re.search(r" \d+\.\d\d too few customers to tell 样本不足 [+-]\d", wave), wave
    assert wave.endswith(f" {D0 + timedelta(days=11)}")
    assert " 2 d itt " not in text_of(page)  # the primary window only, by default

    every = client.get("/results", params={"campaign": "thank_you", "window": "all", "view": "all"}).text
    two_days = row_with(every, "thank_you", "2 d ")
    assert f" {n1} {n0} 0 / 0 0.00% 0.00% +0.00 " in two_days
    assert "care_tips" not in text_of(every).split("Per wave")[1]
    delivered = client.get("/results", params={"view": "received"}).text  # the delivered view
    assert '<option value="received" selected>' in delivered
    assert_no_personal_data(page)
    assert_no_personal_data(every)


def test_campaign_page_shows_waves_curve_breakdowns_and_categories(shop, client):
    n1, n0 = len(shop.treated), len(shop.holdout)
    page = client.get("/campaign", params={"name": "thank_you"}).text
    assert row_with(page, "10 d*").startswith(
        f"10 d* 1 {n1} {n0} {TREATED_RESPONDERS} / {HOLDOUT_RESPONDERS}"
    )
    assert row_with(page, "2 d ").startswith(f"2 d 1 {n1} {n0} 0 / 0")
    assert page.count('<polyline class="line') == 2 and '<circle class="dot too_few"' in page
    # The curve: nobody on day 3, the treated responders by day 4, the holdout's by day 5.
    curve = {
        cells[0]: cells
        for cells in (text_of(r).split() for r in re.findall(r"<tr><td>\d+</td>.*?</tr>", page, flags=re.S))
    }
    treated_rate = f"{100 * TREATED_RESPONDERS / n1:.2f}%"
    assert curve["3"][:7] == ["3", f"{n1}", "0", "0.00%", f"{n0}", "0", "0.00%"]
    assert curve["4"][:7] == ["4", f"{n1}", f"{TREATED_RESPONDERS}", treated_rate, f"{n0}", "0", "0.00%"]
    assert curve["5"][5] == f"{HOLDOUT_RESPONDERS}" and curve["10"][5] == f"{HOLDOUT_RESPONDERS}"
    assert "Breakdowns, 10-day window" in page and "<h3>variant</h3>" in page and "<h3>channels</h3>" in page
    assert row_with(page, "new ", f"{TREATED_RESPONDERS} / {HOLDOUT_RESPONDERS}")  # the thank-you variant
    assert row_with(page, "food", f"{TREATED_RESPONDERS} ", "100.0%")  # what the treated responders bought
    single = client.get("/campaign", params={"name": "thank_you", "wave": "1", "due": D0.isoformat()}).text
    assert f"thank_you · wave 1 sent for {D0}" in single
    assert row_with(single, "10 d*", "itt").startswith(f"10 d* itt {n1} {n0} {TREATED_RESPONDERS} / ")
    assert_no_personal_data(page)
    assert_no_personal_data(single)


def test_an_unknown_campaign_is_a_404_page_with_its_name_escaped(shop, client):
    response = client.get("/campaign", params={"name": "<script>alert(1)</script>"})
    assert response.status_code == 404
    assert "<script>alert" not in response.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert "Evaluated campaigns: thank_you." in text_of(response.text)
    planned = client.get("/campaign", params={"name": "care_tips"})  # planned, nothing matured yet
    assert planned.status_code == 200 and "care_tips has no evaluation yet" in planned.text


def test_an_empty_store_is_a_friendly_message(store_engine, monkeypatch, client):
    monkeypatch.setattr(data, "store_engine", lambda: store_engine)
    plans, results = client.get("/"), client.get("/results")
    assert plans.status_code == results.status_code == 200
    assert "No campaign plan is stored yet." in plans.text
    assert "No campaign has been evaluated yet." in results.text
    assert client.get("/campaign").status_code == 200


def test_a_store_behind_the_code_shows_the_upgrade_command(tmp_path, monkeypatch, client):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    monkeypatch.setattr(data, "store_engine", lambda: engine)
    never = client.get("/results")
    assert never.status_code == 503
    assert "is at schema revision none (empty database)" in never.text
    assert "<code>huitouke db upgrade --conn crm_db</code>" in never.text

    upgrade(engine, "0003")
    behind = client.get("/")
    assert behind.status_code == 503
    assert f"is at schema revision 0003; this code reads revision {head_revision()}" in behind.text
    assert "huitouke db upgrade --conn crm_db" in behind.text
    upgrade(engine)
    assert client.get("/").status_code == 200


def test_a_missing_connection_says_how_to_define_it(monkeypatch, client):
    monkeypatch.setattr(data, "store_conn_id", lambda: "no_such_db")
    response = client.get("/")
    assert response.status_code == 503
    assert "Airflow Connection &#39;no_such_db&#39; is not defined" in response.text
    assert "AIRFLOW_CONN_NO_SUCH_DB" in response.text and "The CRM store is not ready" in response.text


# ----------------------------------------------------------------------------- Airflow, for real


def test_airflow_loads_the_plugin_through_its_entry_point():
    from airflow import plugins_manager
    from fastapi import FastAPI

    plugins_manager.ensure_plugins_loaded()
    errors = plugins_manager.get_import_errors()
    assert errors == {}, (
        f"{errors}: a second copy of the package metadata on sys.path (plugins/huitouke.egg-info, "
        "left by `pip install -e`) registers the plugin twice"
        if any("already registered" in e for e in errors.values())
        else errors
    )
    (plugin,) = [p for p in plugins_manager._get_plugins()[0] if p.name == "huitouke"]
    assert "huitouke.ui.plugin:HuitoukePlugin" in str(plugin.source)
    (fastapi_app,) = plugin.fastapi_apps
    assert fastapi_app["url_prefix"] == "/huitouke" and isinstance(fastapi_app["app"], FastAPI)
    views = {v["url_route"]: v for v in plugin.external_views}
    assert (
        views["huitouke-plans"]["href"] == "huitouke/"
        and views["huitouke-results"]["href"] == "huitouke/results"
    )
    assert all(v["destination"] == "nav" and not v["href"].startswith("/") for v in views.values())
    # Each entry its own icon and name (whole in the UI's 56-pixel nav box: tests/test_ui_browser.py).
    assert len({v["icon"] for v in views.values()}) == len({v["name"] for v in views.values()}) == 2
    (info,) = [i for i in plugins_manager.get_plugin_info() if i["name"] == "huitouke"]
    assert info["fastapi_apps"][0]["url_prefix"] == "/huitouke"


def test_loading_the_plugin_imports_neither_fastapi_nor_the_store():
    """Every Airflow process loads plugins, the task runner too: the app is built on demand."""
    code = (
        "import sys, huitouke.ui.plugin as p; "
        "heavy = [m for m in ('fastapi', 'pandas', 'scipy', 'huitouke.ui.app', 'huitouke.store.schema') "
        "if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]


@pytest.fixture(scope="module")
def airflow_api(airflow_db):
    """Airflow's own API app (what `airflow api-server` serves), with the plugins it mounts."""
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    app = create_app("core")
    with TestClient(app) as client:
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="ADMIN"))
        yield client, token
    purge_cached_app()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the suite's short key
def test_inside_airflow_the_pages_need_a_logged_in_user(airflow_api, shop):
    client, token = airflow_api
    client.cookies.clear()
    assert client.get("/huitouke/results").status_code == 401
    to_login = client.get("/huitouke/results", headers={"Accept": "text/html"}, follow_redirects=False)
    assert to_login.status_code == 303 and "/auth/login" in to_login.headers["location"]
    assert "next=" in to_login.headers["location"]
    icons = [client.get(f"/huitouke/{name}") for name in ("icon-plans.svg", "icon-results.svg", "icon.svg")]
    assert [i.status_code for i in icons] == [200, 200, 200]  # the nav icons carry no data
    assert icons[0].text != icons[1].text and icons[0].headers["content-type"] == "image/svg+xml"

    as_api = client.get("/huitouke/results", headers={"Authorization": f"Bearer {token}"})
    assert as_api.status_code == 200 and "thank_you" in as_api.text
    client.cookies.set("_token", token)  # how the Airflow UI's browser session carries the user
    page = client.get("/huitouke/")
    assert page.status_code == 200 and f"· {D0}" in page.text
    client.cookies.clear()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the suite's short key
def test_inside_airflow_the_plugin_is_listed_with_its_nav_entries(airflow_api):
    client, token = airflow_api
    response = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    (plugin,) = [p for p in response.json()["plugins"] if p["name"] == "huitouke"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/huitouke"
    assert {v["url_route"] for v in plugin["external_views"]} == {"huitouke-plans", "huitouke-results"}
    errors = client.get("/api/v2/plugins/importErrors", headers={"Authorization": f"Bearer {token}"})
    assert errors.json()["total_entries"] == 0, errors.json()
