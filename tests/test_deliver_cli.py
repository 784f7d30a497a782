"""The delivery commands as a data engineer runs them (docs/delivery.md, "Commands"), on SQLite and
PostgreSQL: ``optouts import``, ``calls list`` / ``calls import``, ``deliver status``. Their
output counts and never shows a phone number, an e-mail address or a name."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from deliver_rows import CAMPAIGN, phone, seed, yesterday
from sqlalchemy import select, update

from huitouke.cli import main
from huitouke.deliver import persist
from huitouke.store.schema import customers, opt_outs, outbox

EARLIER = datetime(2025, 12, 1)
FULL_NUMBER = re.compile(r"1[3-9]\d{9}")


@pytest.fixture
def store(store_engine, store_url):
    """The migrated store and its URL for ``--url``."""
    return store_engine, store_url


SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the same SQL twice


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_no_personal_data(text: str, n: int = 10) -> None:
    assert not FULL_NUMBER.search(text), text
    for i in range(n):
        assert phone(i) not in text and f"c{i}@example.com" not in text and f"顾客{i}" not in text


def stored_opt_outs(engine) -> dict[tuple[str, str], str]:
    with engine.connect() as conn:
        return {(r.customer_id, r.channel): r.source for r in conn.execute(select(opt_outs))}


def flags(engine) -> dict[str, tuple[bool, bool]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(customers.c.customer_id, customers.c.sms_opt_out, customers.c.email_opt_out)
        )
        return {r.customer_id: (bool(r.sms_opt_out), bool(r.email_opt_out)) for r in rows}


# ------------------------------------------------------------------------------ optouts import


def write(tmp_path: Path, text: str, name: str = "optouts.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_an_exported_list_is_recorded_once_and_the_output_names_no_one(store, tmp_path, capsys):
    engine, url = store
    seed(engine, 5)
    with engine.begin() as conn:  # c4 said stop by a reply before the import
        persist.record_opt_outs(
            conn,
            [{"customer_id": "c4", "channel": "sms", "source": "reply", "received_at": EARLIER}],
            EARLIER,
        )
    path = write(
        tmp_path,
        "手机号,内容,退订时间\n"
        "13800000000,T,2025-12-11 10:02:00\n"  # c0, written without +86
        "+86 138-0000-0001,退订,2025/12/11 10:05\n"  # c1, with spaces and dashes
        "008613800000001,TD,\n"  # c1 again (same opt-out)
        "+8613800000004,T,\n"  # c4: already opted out
        "13999999999,T,\n"  # nobody's number
        "12345,T,\n",  # not a mobile number: a row error
        encoding="gbk",
    )

    code, out, err = run(capsys, "optouts", "import", str(path), "--url", url)

    assert code == 0, err
    assert "rows read:                 6 (5 numbers or addresses)" in out
    assert "opt-outs recorded (new):   2" in out
    assert "already opted out:         1" in out
    assert "not matched to a customer: 1" in out
    assert "row errors:                1" in out and f"{path}:7: 手机号: not a mobile number" in out
    assert_no_personal_data(out + err)
    assert "13999999999" not in out and "12345" not in out.replace(str(path), "")
    assert stored_opt_outs(engine) == {
        ("c0", "sms"): "import",
        ("c1", "sms"): "import",
        ("c4", "sms"): "reply",
    }
    assert flags(engine)["c0"] == (True, False) and flags(engine)["c2"] == (False, False)
    with engine.connect() as conn:
        received = conn.scalar(select(opt_outs.c.received_at).where(opt_outs.c.customer_id == "c0"))
    assert received == datetime(2025, 12, 11, 2, 2)  # 10:02 Shanghai, stored as UTC

    code, again, _ = run(capsys, "optouts", "import", str(path), "--url", url)
    assert code == 0
    assert "opt-outs recorded (new):   0" in again and "already opted out:         3" in again
    assert len(stored_opt_outs(engine)) == 3


@SQLITE_ONLY
def test_channel_all_stops_every_channel_and_addresses_match_e_mail_customers(store, tmp_path, capsys):
    engine, url = store
    seed(engine, 3, channel="email")  # c0..c2, sent to by e-mail
    numbers = write(tmp_path, "13800000000\n+8613800000001\n", name="numbers.csv")  # a bare list
    addresses = write(tmp_path, "邮箱\nC2@Example.com\nnobody@example.com\n", name="addresses.csv")

    code, out, _ = run(capsys, "optouts", "import", str(numbers), "--channel", "all", "--url", url)
    assert code == 0 and "opt-outs recorded (new):   2" in out
    code, out, _ = run(
        capsys, "optouts", "import", str(addresses), "--source", "aliyun-export", "--json", "--url", url
    )
    assert code == 0
    assert '"recorded": 1' in out and '"not_matched": 1' in out
    assert_no_personal_data(out)
    assert "nobody@example.com" not in out

    assert stored_opt_outs(engine) == {
        ("c0", "all"): "import",
        ("c1", "all"): "import",
        ("c2", "email"): "aliyun-export",
    }
    assert flags(engine) == {"c0": (True, True), "c1": (True, True), "c2": (False, True)}

    code, out, _ = run(capsys, "optouts", "import", str(numbers), "--channel", "sms", "--url", url)
    assert "already opted out:         2" in out  # an opt-out of all covers sms


@SQLITE_ONLY
def test_a_users_mistake_is_one_line_and_exit_2(store, tmp_path, capsys):
    engine, url = store
    write(tmp_path, "", name="empty.csv")
    write(tmp_path, "13800000000\n", name="optouts.csv")
    for argv, says in (
        (("missing.csv",), "no such file"),
        (("empty.csv",), "empty"),
        (("optouts.csv", "--source", "a source with spaces"), "--source must be"),
    ):
        code, out, err = run(capsys, "optouts", "import", str(tmp_path / argv[0]), *argv[1:], "--url", url)
        assert code == 2 and out == ""
        assert err.startswith("error: ") and says in err and err.count("\n") == 1, err
    assert stored_opt_outs(engine) == {}


def test_the_command_run_as_a_process_exits_2_without_a_traceback(tmp_path):
    from huitouke.store.connection import make_engine
    from huitouke.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    upgrade(make_engine(url))
    bad = write(tmp_path, "名字,备注\n张三,x\n", name="no_phone_column.csv")
    result = subprocess.run(
        [sys.executable, "-m", "huitouke.cli", "optouts", "import", str(bad), "--url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and "no phone or e-mail column" in result.stderr
    assert "张三" not in result.stderr and result.stdout == ""


def test_an_empty_store_behind_the_code_says_how_to_upgrade(tmp_path, capsys):
    path = write(tmp_path, "13800000000\n")
    code, _, err = run(capsys, "optouts", "import", str(path), "--url", f"sqlite:///{tmp_path / 'new.db'}")
    assert code == 3 and "huitouke db upgrade" in err  # exit 3: the store (docs/cli.md)


# ------------------------------------------------------------------------------- calls list/import


def fill_in(path: Path, outcomes: dict[int, tuple[str, str]]) -> None:
    """What the shop's staff do: write an outcome and feedback on some rows of the call list."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    for row in rows[1:]:
        if int(row[0]) in outcomes:
            row[header.index("结果")], row[header.index("反馈")] = outcomes[int(row[0])]
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows(rows)


def test_a_call_list_written_filled_in_and_imported(store, tmp_path, capsys):
    engine, url = store
    ids = seed(engine, 4, channel="call")
    folder = tmp_path / "calls"

    code, out, err = run(capsys, "calls", "list", "--folder", str(folder), "--url", url)
    assert code == 0, err
    (listed,) = folder.glob(f"calls_{yesterday()}_*.csv")  # one new file per listing
    assert out.strip() == f"call list for {yesterday()}: 4 calls written to {listed}"
    assert "顾客0" in listed.read_text(encoding="utf-8-sig")  # the file is for the staff: names in it

    fill_in(
        listed,
        {
            ids[0]: ("已接通", "很满意 13800000000"),
            ids[1]: ("无人接听", ""),
            ids[2]: ("退订", "不要再打了"),
            ids[3]: ("打错了吗", ""),  # not an outcome: a row error
        },
    )
    code, out, err = run(capsys, "calls", "import", str(listed), "--url", url)
    assert code == 0, err
    assert "calls recorded:            3 (not_reached 1, opted_out 1, reached 1)" in out
    assert "opt-outs recorded (new):   1" in out and "not a listed call:         0" in out
    assert "row errors:                1" in out and f"{listed}:5: 结果:" in out
    assert_no_personal_data(out + err)
    assert "不要再打了" not in out and "很满意" not in out  # feedback is never printed
    assert stored_opt_outs(engine) == {("c2", "all"): "call"}

    code, again, _ = run(capsys, "calls", "import", str(listed), "--url", url)
    assert "calls recorded:            0 (none)" in again and "not a listed call:         3" in again

    code, out, _ = run(capsys, "calls", "list", "--folder", str(folder), "--url", url)
    assert code == 0 and "0 calls (none queued)" in out


@SQLITE_ONLY
def test_calls_to_opted_out_or_held_out_customers_are_not_listed(store, tmp_path, capsys):
    engine, url = store
    seed(engine, 4, channel="call", held_out={1}, opted_out={2})  # c2: the SMS opt-out flag
    with engine.begin() as conn:
        persist.record_opt_outs(
            conn,
            [{"customer_id": "c3", "channel": "all", "source": "import", "received_at": EARLIER}],
            EARLIER,
        )
    code, out, err = run(capsys, "calls", "list", "--folder", str(tmp_path), "--url", url)
    assert code == 0 and "1 calls written" in out, out + err
    with engine.connect() as conn:
        rows = dict(conn.execute(select(outbox.c.customer_id, outbox.c.status)).all())
    assert rows == {"c0": "listed", "c1": "suppressed", "c2": "suppressed", "c3": "suppressed"}


def test_a_call_list_for_a_day_too_old_to_send_is_refused(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"  # refused before the store is opened
    old = (yesterday() - timedelta(days=3)).isoformat()
    folder = tmp_path / "calls"
    code, _, err = run(capsys, "calls", "list", "--day", old, "--folder", str(folder), "--url", url)
    assert code == 2 and "too late to send" in err and not folder.exists()


# --------------------------------------------------------------------------------- deliver status


@SQLITE_ONLY
def test_status_shows_the_outbox_by_campaign_channel_status_and_reason(store, capsys):
    engine, url = store
    day = yesterday()
    sms = seed(engine, 6)
    mail = seed(engine, range(10, 12), channel="email", campaign="thank_you")
    seed(engine, range(20, 21), day=day - timedelta(days=1), campaign="care_tips")
    changes = {
        sms[0]: {"status": "sent", "receipt": "delivered", "billed_segments": 2},
        sms[1]: {"status": "sent", "receipt": "undelivered", "billed_segments": 1},
        sms[2]: {"status": "sent", "billed_segments": 1},
        sms[3]: {"status": "failed", "last_error": f"invalid_number: {phone(3)} is not a number"},
        sms[4]: {"status": "suppressed", "last_error": "suppressed at send time: opted_out"},
        mail[0]: {"status": "unknown", "last_error": "smtp timeout after the message was sent"},
    }
    with engine.begin() as conn:
        for message_id, values in changes.items():
            conn.execute(update(outbox).where(outbox.c.message_id == message_id).values(**values))
        persist.record_opt_outs(
            conn,
            [{"customer_id": "c5", "channel": "sms", "source": "reply", "received_at": datetime.now()}],
            datetime.now(),
        )

    code, out, err = run(capsys, "deliver", "status", "--url", url)
    assert code == 0, err
    assert f"Outbox, business day {day}: messages by status" in out
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2:] for line in out.splitlines()[2:4]}
    header = out.splitlines()[1].split()
    assert header == ["campaign", "channel", "queued", "sent", "failed", "unknown", "suppressed",
                      "delivered", "undelivered", "segments", "total"]  # fmt: skip
    assert rows[f"{CAMPAIGN} sms"] == ["1", "3", "1", "0", "1", "1", "1", "4", "6"]
    assert rows["thank_you email"] == ["1", "0", "0", "1", "0", "0", "0", "0", "2"]
    assert "invalid_number: 138****0003 is not a number" in out  # masked again, whatever a reason says
    assert "suppressed at send time: opted_out" in out and "smtp timeout" in out
    assert "Opt-outs recorded since" in out and "reply" in out
    assert "care_tips" not in out
    assert_no_personal_data(out)

    code, out, _ = run(capsys, "deliver", "status", "--day", day.isoformat(), "--days", "2", "--url", url)
    assert f"business days {day - timedelta(days=1)}..{day}" in out and "care_tips" in out


@SQLITE_ONLY
def test_status_of_an_empty_outbox_or_day(store, capsys):
    _, url = store
    code, out, _ = run(capsys, "deliver", "status", "--url", url)
    assert code == 0 and "The outbox is empty" in out
    code, out, _ = run(capsys, "deliver", "status", "--day", "2025-01-01", "--url", url)
    assert code == 0 and "no messages" in out
    with pytest.raises(SystemExit) as exited:
        main(["deliver", "status", "--days", "0", "--url", url])
    assert exited.value.code == 2 and "expected a positive number of days" in capsys.readouterr().err
