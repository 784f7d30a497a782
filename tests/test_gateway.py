"""The gateway simulator: its faults really happen (seeded), it records and counts what it accepts,
its cursors page, a drop really drops the connection, and its command starts a real server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from huitouke.gateway.cli import main as gateway_main
from huitouke.gateway.server import GatewayProcess
from huitouke.gateway.state import CallFault, GatewayFaults, GatewayState

AUTH = {"Authorization": "Bearer test-token"}
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _message(n: int, out_id: str | None = None) -> dict:
    return {"id": out_id or f"htk-{n}", "to": f"+86138{n:08d}", "text": "【小店】hi 回T退订", "campaign": "c"}


def _send(gw, *messages, timeout: float = 5.0, headers=AUTH) -> requests.Response:
    return requests.post(
        f"{gw.url}/webhook/messages", json={"messages": list(messages)}, headers=headers, timeout=timeout
    )


def test_accepts_records_and_counts_a_double_send(gw):
    first = _send(gw, _message(1), _message(2))
    again = _send(gw, _message(1))
    assert first.status_code == again.status_code == 200
    results = first.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "accepted"]
    assert again.json()["results"][0]["provider_id"] != results[0]["provider_id"]

    accepted = requests.get(f"{gw.url}/_sim/accepted").json()["messages"]
    assert [(m["out_id"], m["times_accepted"]) for m in accepted] == [
        ("htk-1", 2),
        ("htk-2", 1),
        ("htk-1", 2),
    ]
    assert accepted[0]["extra"] == {"campaign": "c"}
    stats = requests.get(f"{gw.url}/_sim/stats").json()
    assert (stats["accepted"], stats["distinct_out_ids"], stats["duplicates"]) == (3, 2, 1)


def test_dedupe_ids_answers_a_repeat_with_the_first_record(gw):
    gw.state.set_faults(dedupe_ids=True)
    first = _send(gw, _message(1)).json()["results"][0]
    again = _send(gw, _message(1)).json()["results"][0]
    assert again == first
    stats = gw.state.stats()
    assert (stats["accepted"], stats["duplicates"], stats["deduplicated"]) == (1, 0, 1)
    assert gw.state.times_accepted("htk-1") == 1


def test_refused_calls_accept_nothing_and_the_dice_are_seeded(gw):
    def run() -> list[int]:
        gw.state.reset(GatewayFaults(rate_5xx=0.2, rate_429=0.1, retry_after_s=2, seed=11))
        codes = []
        for n in range(120):
            answer = _send(gw, _message(n))
            codes.append(answer.status_code)
            if answer.status_code == 429:
                assert answer.headers["Retry-After"] == "2"
        return codes

    codes = run()
    assert codes == run()  # same seed, same faults
    stats = gw.state.stats()
    assert stats["faults"] == {"5xx": codes.count(503), "429": codes.count(429)}
    assert codes.count(503) > 10 and codes.count(429) > 3
    assert stats["accepted"] == codes.count(200)
    accepted = {m["out_id"] for m in gw.state.accepted()}
    assert accepted == {f"htk-{n}" for n, code in enumerate(codes) if code == 200}


def test_a_dropped_call_is_recorded_and_the_client_sees_no_response(gw):
    gw.state.set_faults(rate_drop=1.0)
    with pytest.raises(requests.ConnectionError):
        _send(gw, _message(1), _message(2))
    gw.state.set_faults(rate_drop=0.0)
    assert gw.state.stats()["faults"] == {"drop": 1}
    status = requests.get(f"{gw.url}/webhook/messages/htk-2", headers=AUTH)
    assert status.status_code == 200 and status.json()["status"] in {"accepted", "delivered"}


@pytest.mark.parametrize("accepts", [True, False])
def test_a_timed_out_call_hangs_and_was_accepted_or_not(gw, accepts):
    gw.state.set_faults(rate_timeout=1.0, hang_s=0.6, timeout_accepts=1.0 if accepts else 0.0)
    with pytest.raises(requests.ReadTimeout):
        _send(gw, _message(1), timeout=0.2)
    assert gw.state.stats()["faults"] == {"timeout_accepted" if accepts else "timeout": 1}
    assert (gw.state.lookup(out_id="htk-1") is not None) is accepts


def test_invalid_numbers_are_rejected_per_number_every_time(gw):
    gw.state.set_faults(rate_invalid_number=0.5, seed=3)
    batch = [_message(n) for n in range(40)]
    first = _send(gw, *batch).json()["results"]
    again = _send(gw, *batch).json()["results"]
    rejected = [r["id"] for r in first if r["status"] == "rejected"]
    assert 5 < len(rejected) < 35
    assert [r["id"] for r in again if r["status"] == "rejected"] == rejected
    assert {r["code"] for r in first if r["status"] == "rejected"} == {"invalid_number"}
    assert gw.state.stats()["rejected"] == {"invalid_number": 2 * len(rejected)}


def test_insufficient_balance_switched_at_run_time(gw):
    assert requests.post(f"{gw.url}/_sim/faults", json={"insufficient_balance": True}).status_code == 200
    answer = _send(gw, _message(1))
    assert (answer.status_code, answer.json()["code"]) == (402, "insufficient_balance")
    requests.post(f"{gw.url}/_sim/faults", json={"insufficient_balance": False})
    assert _send(gw, _message(1)).status_code == 200
    assert gw.state.stats()["accepted"] == 1


def test_the_token_is_checked_everywhere(gw):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert _send(gw, _message(1), headers=headers).status_code == 401
        for path in ("messages/htk-1", "receipts", "replies"):
            assert requests.get(f"{gw.url}/webhook/{path}", headers=headers).status_code == 401
    assert gw.state.stats()["accepted"] == 0


def test_bad_requests_and_unknown_settings_are_refused(gw):
    assert requests.post(f"{gw.url}/webhook/messages", data="nope", headers=AUTH).status_code == 400
    assert _send(gw).status_code == 400
    assert _send(gw, {"id": "x"}).status_code == 400
    assert requests.post(f"{gw.url}/_sim/faults", json={"rate_everything": 1}).status_code == 400


def test_status_of_an_unknown_message_is_404(gw):
    assert requests.get(f"{gw.url}/webhook/messages/never-sent", headers=AUTH).status_code == 404


def test_receipts_and_replies_page_with_cursors(gw):
    gw.state.set_faults(rate_reply_t=1.0, rate_undelivered=1.0)
    _send(gw, _message(1), _message(2))
    page = requests.get(f"{gw.url}/webhook/receipts", headers=AUTH).json()
    assert [(r["id"], r["status"]) for r in page["receipts"]] == [
        ("htk-1", "undelivered"),
        ("htk-2", "undelivered"),
    ]
    assert all(r["code"] and r["at"].endswith("+00:00") for r in page["receipts"])
    cursor = page["cursor"]
    assert requests.get(f"{gw.url}/webhook/receipts", params={"cursor": cursor}, headers=AUTH).json() == {
        "receipts": [],
        "cursor": cursor,
    }
    _send(gw, _message(3))
    later = requests.get(f"{gw.url}/webhook/receipts", params={"cursor": cursor}, headers=AUTH).json()
    assert [r["id"] for r in later["receipts"]] == ["htk-3"]

    replies = requests.get(f"{gw.url}/webhook/replies", headers=AUTH).json()
    assert [(r["from"], r["text"]) for r in replies["replies"]] == [
        ("+8613800000001", "T"),
        ("+8613800000002", "T"),
        ("+8613800000003", "T"),
    ]
    assert requests.post(f"{gw.url}/_sim/reply", json={"from": "+8613900000000", "text": "退订"}).ok
    more = requests.get(
        f"{gw.url}/webhook/replies", params={"cursor": replies["cursor"]}, headers=AUTH
    ).json()
    assert [(r["from"], r["text"]) for r in more["replies"]] == [("+8613900000000", "退订")]


def test_receipts_wait_for_their_delay(gw):
    gw.state.set_faults(receipt_delay_s=60)
    _send(gw, _message(1))
    assert requests.get(f"{gw.url}/webhook/receipts", headers=AUTH).json() == {"receipts": [], "cursor": "0"}
    assert requests.get(f"{gw.url}/webhook/messages/htk-1", headers=AUTH).json()["status"] == "accepted"


def test_sim_reset_forgets_everything(gw):
    _send(gw, _message(1))
    assert requests.post(f"{gw.url}/_sim/reset").ok
    assert requests.get(f"{gw.url}/_sim/accepted").json() == {"messages": []}


def test_call_faults_are_drawn_in_proportion():
    state = GatewayState(GatewayFaults(rate_5xx=0.2, rate_429=0.1, rate_timeout=0.1, rate_drop=0.1, seed=5))
    drawn = [state.decide_call_fault() for _ in range(5000)]
    share = {fault: drawn.count(fault) / len(drawn) for fault in CallFault}
    assert abs(share[CallFault.SERVER_ERROR] - 0.2) < 0.03
    assert abs(share[CallFault.RATE_LIMITED] - 0.1) < 0.02
    assert abs(share[CallFault.TIMEOUT] + share[CallFault.TIMEOUT_ACCEPTED] - 0.1) < 0.02
    assert abs(share[CallFault.DROP] - 0.1) < 0.02
    assert state.stats()["calls"] == {"webhook": 5000}


def test_the_command_serves_a_real_gateway_in_its_own_process():
    with GatewayProcess(GatewayFaults(rate_invalid_number=1.0), token="tok-123") as gw:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", gw.url)
        assert "listening on" in gw.log_lines[0]
        message = _message(1)
        headers = {"Authorization": "Bearer tok-123"}
        answer = requests.post(f"{gw.url}/webhook/messages", json={"messages": [message]}, headers=headers)
        assert answer.json()["results"][0]["code"] == "invalid_number"
        gw.set_faults(rate_invalid_number=0.0)
        requests.post(f"{gw.url}/webhook/messages", json={"messages": [_message(2)]}, headers=headers)
        assert gw.stats()["rejected"] == {"invalid_number": 1}
        assert [m["out_id"] for m in gw.accepted()] == ["htk-2"]
        gw.reset()
        assert gw.stats()["accepted"] == 0


def test_the_command_logs_its_url_and_faults():
    command = [
        sys.executable,
        "-m",
        "huitouke.gateway.cli",
        "--port",
        "0",
        "--rate-5xx",
        "0.5",
        "--seed",
        "4",
    ]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PLUGINS)}
    )
    try:
        line = process.stderr.readline()
        assert re.search(r"listening on http://127\.0\.0\.1:\d+ .*rate_5xx=0\.5, seed=4", line)
    finally:
        process.terminate()
        process.wait(10)


def test_the_command_refuses_a_remote_address(capsys):
    assert gateway_main(["--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_connections_get_tcp_nodelay(gateway):
    # asyncio sets TCP_NODELAY on accepted connections only when the listening socket says TCP;
    # without it every call after a connection's first waits ~40 ms for a delayed ACK.
    assert gateway._socket.proto == socket.IPPROTO_TCP
