"""The e-mail's one-click unsubscribe link (RFC 8058; docs/delivery.md, "The unsubscribe endpoint"),
on SQLite and PostgreSQL. Most tests call the app the Airflow plugin mounts (``huitouke.ui.app``)
through FastAPI's TestClient, with the token secret and the store handed in; the last one goes
through Airflow's own API app (what ``airflow api-server`` serves: the plugin mounted, Airflow's
middlewares and auth manager), with the secret read from its Connection and the link from the
configuration, without any Airflow login. A real api-server process is not started: it would add
tens of seconds and test the same mount."""

from __future__ import annotations

import pytest
from airflow_app import airflow_api_client, plugin_wiring
from deliver_rows import seed
from fastapi.testclient import TestClient
from sqlalchemy import select

from huitouke.deliver.unsubscribe import make_token, token_from_url
from huitouke.deliver.wiring import message_factory
from huitouke.store.schema import customers, opt_outs, outbox
from huitouke.ui import data
from huitouke.ui import unsubscribe as endpoint

SECRET = b"a-test-secret-of-32-bytes-000000"
BASE = "https://shop.example/huitouke/unsubscribe"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}  # RFC 8058's body, form-encoded
PATH = "/unsubscribe"  # inside the plugin's app; /huitouke/unsubscribe once Airflow mounts it


@pytest.fixture
def shop(store_engine, monkeypatch):
    """Two customers with an e-mail each in the outbox, and one SMS; the endpoint wired to them."""
    emails = seed(store_engine, 2, channel="email")
    (sms,) = seed(store_engine, range(5, 6), channel="sms", campaign="thank_you")
    monkeypatch.setattr(endpoint, "configured_secret", lambda: SECRET)
    monkeypatch.setattr(endpoint, "configured_engine", lambda: store_engine)
    return store_engine, emails, sms


@pytest.fixture(scope="module")
def client() -> TestClient:
    from huitouke.ui.app import create_app

    return TestClient(create_app())  # authenticated like the plugin's: its pages need a login


def opt_outs_of(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            (r.customer_id, r.channel, r.source, r.message_id)
            for r in conn.execute(select(opt_outs).order_by(opt_outs.c.customer_id))
        ]


def flags_of(engine, customer_id: str) -> tuple[bool, bool]:
    with engine.connect() as conn:
        row = conn.execute(select(customers).where(customers.c.customer_id == customer_id)).one()
    return bool(row.sms_opt_out), bool(row.email_opt_out)


def assert_nothing_personal(page: str) -> None:
    for i in range(6):
        assert f"c{i}@example.com" not in page and f"顾客{i}" not in page and f"+86138{i:08d}" not in page


def test_the_link_in_an_e_mail_unsubscribes_with_one_post(shop, client):
    engine, emails, _ = shop
    row = {"message_id": emails[0], "out_id": "htk-1", "channel": "email", "recipient": "c0@example.com",
           "body": "…", "template": "email/coupon", "campaign": "new_customer_coupon"}  # fmt: skip
    link = message_factory(SECRET, BASE)(row).unsubscribe_url  # what the e-mail's header carries
    token = token_from_url(link)

    response = client.post(PATH, params={"token": token}, data=ONE_CLICK)

    assert response.status_code == 200 and "已退订" in response.text and "unsubscribed" in response.text
    assert opt_outs_of(engine) == [("c0", "email", "link", emails[0])]
    assert flags_of(engine, "c0") == (False, True) and flags_of(engine, "c1") == (False, False)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert_nothing_personal(response.text)

    again = client.post(PATH, params={"token": token}, data=ONE_CLICK)
    assert again.status_code == 200 and "already unsubscribed" in again.text
    assert len(opt_outs_of(engine)) == 1


def test_a_get_only_shows_a_button_that_posts(shop, client):
    engine, emails, _ = shop
    token = make_token(SECRET, emails[1])

    page = client.get(PATH, params={"token": token})  # a person, or a mail scanner following the link

    assert page.status_code == 200 and opt_outs_of(engine) == []
    assert '<form method="post" action="?token=' + token + '">' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert_nothing_personal(page.text)
    clicked = client.post(PATH, params={"token": token}, data=ONE_CLICK)  # the button
    assert clicked.status_code == 200 and opt_outs_of(engine) == [("c1", "email", "link", emails[1])]


def test_a_post_without_the_one_click_body_still_unsubscribes(shop, client):
    engine, _, sms = shop
    response = client.post(PATH, params={"token": make_token(SECRET, sms)})
    assert response.status_code == 200 and "短信" in response.text
    assert opt_outs_of(engine) == [("c5", "sms", "link", sms)]


def forged_and_garbled_tokens() -> list[str]:
    genuine = make_token(SECRET, 1)
    return [
        "",
        "not a token!",
        "AAAA",
        make_token(b"another-secret-of-32-bytes-00000", 1),  # signed with another secret
        genuine[:-2] + ("BB" if genuine.endswith("AA") else "AA"),  # altered
        "x" * 5000,
    ]


def test_a_forged_or_garbled_token_is_400_and_says_nothing_more(shop, client):
    engine, _, _ = shop
    for token in forged_and_garbled_tokens():
        for method in (client.get, client.post):
            response = method(PATH, params={"token": token})
            assert response.status_code == 400 and "链接无效" in response.text, token
            for leak in ("forged", "garbled", "secret", "version", "HMAC", "Traceback", "ValueError"):
                assert leak not in response.text
    assert opt_outs_of(engine) == []


def test_a_valid_token_of_a_message_the_store_does_not_have_is_404(shop, client):
    engine, _, _ = shop
    response = client.post(PATH, params={"token": make_token(SECRET, 999_999)}, data=ONE_CLICK)
    assert response.status_code == 404 and opt_outs_of(engine) == []


def test_without_a_configured_link_or_secret_nothing_is_recorded(shop, client, monkeypatch):
    engine, emails, _ = shop
    token = make_token(SECRET, emails[0])
    monkeypatch.setattr(endpoint, "configured_secret", lambda: None)  # no delivery.unsubscribe_url
    assert client.post(PATH, params={"token": token}).status_code == 404

    def missing():
        raise ValueError("Airflow Connection 'huitouke_unsubscribe' is not defined")

    monkeypatch.setattr(endpoint, "configured_secret", missing)
    response = client.post(PATH, params={"token": token})
    assert response.status_code == 503 and "huitouke_unsubscribe" not in response.text
    assert opt_outs_of(engine) == []


def test_a_store_that_cannot_be_written_is_503_and_the_customer_may_retry(shop, client, monkeypatch):
    _, emails, _ = shop

    def down():
        raise data.StoreProblem("The CRM store (crm_db) is at schema revision none")

    monkeypatch.setattr(endpoint, "configured_engine", down)
    response = client.post(PATH, params={"token": make_token(SECRET, emails[0])})
    assert response.status_code == 503 and "crm_db" not in response.text


# ----------------------------------------------------------------------------- Airflow, for real


@pytest.fixture(scope="module")
def airflow_client(airflow_db):
    yield from airflow_api_client()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_inside_airflow_the_link_needs_no_login_and_reads_its_secret_from_the_connection(
    airflow_client, monkeypatch, tmp_path
):
    secret = "a-connection-password-of-32-byte"
    store_engine = plugin_wiring(  # the shipped configuration, the link turned on
        monkeypatch,
        tmp_path,
        ("unsubscribe_url: null", f"unsubscribe_url: {BASE}"),
        ("huitouke_unsubscribe", {"conn_type": "generic", "password": secret}),
    )
    (message_id,) = seed(store_engine, 1, channel="email")
    token = make_token(secret.encode(), message_id)
    airflow_client.cookies.clear()

    assert airflow_client.get("/huitouke/results").status_code == 401  # the rest of the plugin: login
    page = airflow_client.get("/huitouke/unsubscribe", params={"token": token})
    assert page.status_code == 200 and "确认退订" in page.text and opt_outs_of(store_engine) == []
    done = airflow_client.post("/huitouke/unsubscribe", params={"token": token}, data=ONE_CLICK)
    assert done.status_code == 200 and "已退订" in done.text
    assert opt_outs_of(store_engine) == [("c0", "email", "link", message_id)]
    forged = airflow_client.post("/huitouke/unsubscribe", params={"token": make_token(SECRET, message_id)})
    assert forged.status_code == 400
    with store_engine.connect() as conn:  # the outbox row itself is untouched: only the opt-out
        assert conn.scalar(select(outbox.c.status).where(outbox.c.message_id == message_id)) == "queued"


def test_airflows_access_log_redacts_the_token():
    """docs/delivery.md says tokens do not reach Airflow's access log: its redaction, checked."""
    from airflow.api_fastapi.common.http_access_log import _redact_query_string

    token = make_token(SECRET, 12345)
    assert token not in _redact_query_string(f"token={token}")
