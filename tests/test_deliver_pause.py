"""Pausing one campaign's sending without touching the DAG (``huitouke deliver pause``), and the
run's ``campaigns`` param at delivery: against the real gateway simulator, a pause injected in the
middle of a day's drain holds the campaign's messages queued from the next claim on; resumed, the
next run sends them, each once."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest
from deliver_rows import FAST_RULES, seed
from deliver_rows import job as make_job
from sqlalchemy import select

from huitouke.cli import main
from huitouke.deliver import pauses
from huitouke.deliver.daily import run_day
from huitouke.deliver.persist import out_id_of
from huitouke.deliver.providers.webhook import WebhookProvider
from huitouke.store.schema import outbox

SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
NOW = datetime(2025, 12, 1, 3, 0)
ONE_BATCH_A_CLAIM = dataclasses.replace(FAST_RULES, claim_rows=10, claims_ahead=0)


class PausingWebhook(WebhookProvider):
    """The real webhook provider; its first send call pauses ``campaign`` in the store, as an
    operator running ``huitouke deliver pause`` while the day's drain is under way would."""

    def __init__(self, url: str, engine, campaign: str):
        super().__init__(url, "test-token", batch_size=10, max_concurrency=1, timeout_s=0.5)
        self.engine, self.campaign, self.paused_once = engine, campaign, False

    def send(self, messages):
        if not self.paused_once:
            self.paused_once = pauses.pause(self.engine, self.campaign, NOW, "injected mid-drain")
        return super().send(messages)


def by_campaign(engine) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for campaign, status in conn.execute(select(outbox.c.campaign, outbox.c.status)):
            found.setdefault(campaign, set()).add(status)
    return found


def accepted(gw, engine, campaign: str) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(select(outbox).where(outbox.c.campaign == campaign)).all()
    return [gw.state.times_accepted(out_id_of(r._mapping)) for r in rows]


@SQLITE_ONLY
def test_a_pause_injected_mid_day_keeps_the_campaign_queued_until_resumed(store_engine, gw, caplog):
    seed(store_engine, 10, campaign="thank_you")  # claimed first (lower message ids)
    seed(store_engine, 10, campaign="care_tips", new=("waves",))
    provider = PausingWebhook(f"{gw.url}/webhook", store_engine, "care_tips")
    result = run_day(store_engine, make_job({"sms": provider}, rules=ONE_BATCH_A_CLAIM))

    assert by_campaign(store_engine) == {"thank_you": {"sent"}, "care_tips": {"queued"}}
    assert accepted(gw, store_engine, "care_tips") == [0] * 10
    assert result.as_dict()["held_by_pause"] == {"care_tips": 10}
    assert "campaign care_tips is paused: 10 messages stay queued" in result.as_text()
    assert "campaign care_tips is paused: 10 messages stay queued" in caplog.text

    assert pauses.resume(store_engine, "care_tips")
    again = run_day(store_engine, make_job({"sms": provider}, rules=ONE_BATCH_A_CLAIM))
    assert by_campaign(store_engine) == {"thank_you": {"sent"}, "care_tips": {"sent"}}
    assert accepted(gw, store_engine, "care_tips") == [1] * 10
    assert accepted(gw, store_engine, "thank_you") == [1] * 10
    assert again.as_dict()["outcomes"] == {"sent": 10}


def test_the_runs_campaigns_param_sends_only_those(store_engine, gw):
    seed(store_engine, 5, campaign="thank_you")
    seed(store_engine, 5, campaign="care_tips", new=("waves",))
    provider = WebhookProvider(f"{gw.url}/webhook", "test-token", batch_size=10, timeout_s=0.5)
    run_day(store_engine, make_job({"sms": provider}, campaigns=("care_tips",)))
    assert by_campaign(store_engine) == {"thank_you": {"queued"}, "care_tips": {"sent"}}


@SQLITE_ONLY
def test_a_paused_campaigns_calls_are_not_listed(store_engine, tmp_path):
    seed(store_engine, 3, campaign="phone_followup", channel="call")
    seed(store_engine, 2, campaign="win_back", channel="call", new=("waves",))
    pauses.pause(store_engine, "phone_followup", NOW)
    result = run_day(store_engine, make_job({}, channels=("call",), call_list_folder=tmp_path))
    assert result.calls_listed == 2
    assert by_campaign(store_engine) == {"phone_followup": {"queued"}, "win_back": {"listed"}}


@SQLITE_ONLY
def test_the_cli_pauses_resumes_and_lists(store_engine, store_url, capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--url", store_url])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("deliver", "pause", "--campaign", "care_tips", "--note", "wrong coupon")
    assert code == 0 and "sending paused" in out
    assert (
        run("deliver", "pause", "--campaign", "care_tips")[1].strip()
        == "campaign care_tips was paused already"
    )
    code, out, _ = run("deliver", "pauses")
    assert code == 0 and "care_tips" in out and "wrong coupon" in out
    code, out, _ = run("deliver", "resume", "--campaign", "care_tips")
    assert code == 0 and "sending resumed" in out
    assert run("deliver", "pauses")[1].strip() == "No campaign is paused."

    code, out, err = run("deliver", "pause", "--campaign", "no_such_campaign")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "'no_such_campaign'" in err and "care_tips" in err
    assert "Traceback" not in err
