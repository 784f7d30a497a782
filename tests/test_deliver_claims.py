"""Claims of several rounds of batches (``DeliveryRules.claim_rows``): a batch whose lease ran
short before its call could start goes back queued, unsent and its attempt uncounted."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

from deliver_rows import FAST_RULES, seed, statuses
from deliver_rows import job as make_job
from sqlalchemy import select

from huitouke.deliver.daily import run_day
from huitouke.deliver.persist import out_id_of
from huitouke.deliver.providers.webhook import WebhookProvider
from huitouke.store.schema import outbox


class JumpingClock:
    """Real time, plus a shift the provider's first call adds (the sender stalls that long)."""

    def __init__(self) -> None:
        self.shift = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None) + self.shift


class StallingWebhook(WebhookProvider):
    def __init__(self, clock: JumpingClock, stall: timedelta, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock, self.stall, self.calls = clock, stall, 0

    def send(self, messages):
        self.calls += 1
        if self.calls == 1:
            self.clock.shift += self.stall
        return super().send(messages)


def test_batches_whose_lease_ran_short_go_back_queued_and_are_sent_once(store_engine, gw, caplog):
    ids = seed(store_engine, 40)
    rules = dataclasses.replace(FAST_RULES, claim_rows=40)  # 4 rounds of 10 x 1: leased 4 x 3 s
    clock = JumpingClock()
    provider = StallingWebhook(
        clock, timedelta(seconds=20), f"{gw.url}/webhook", "test-token", batch_size=10, max_concurrency=1
    )
    with caplog.at_level(logging.INFO, logger="huitouke"):
        run_day(store_engine, make_job({"sms": provider}, rules=rules, clock=clock))
    assert {s for s, _ in statuses(store_engine).values()} == {"sent"}
    with store_engine.connect() as conn:
        rows = conn.execute(select(outbox).where(outbox.c.message_id.in_(ids))).all()
    assert {gw.state.times_accepted(out_id_of(r._mapping)) for r in rows} == {1}
    assert {r.attempts for r in rows} == {1}
    assert any("their lease ran short" in r.message for r in caplog.records)
    assert provider.calls == 4
