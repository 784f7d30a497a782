"""What counts as stop in a reply, and how phone numbers are matched (docs/delivery.md, "Opt-outs")."""

from __future__ import annotations

import pytest

from huitouke.deliver.replies import is_opt_out, normalize_phone, normalize_reply


@pytest.mark.parametrize(
    "text",
    [
        "T",
        "t",
        "TD",
        "td",
        " td ",
        "T。",
        "T.",
        "ＴＤ",  # full-width letters
        "ｔｄ",
        "退订",
        "退订！",
        "【退订】",
        "退订\n",
        "R",
        "N",
        "n!",
        "STOP",
        "Stop",
        "stop!!",
        "ＳＴＯＰ",
        "UNSUBSCRIBE",
        "unsubscribe",
        "STOPALL",
        "cancel",
        "END",
        "quit",
        "\u200bT\u200b",  # zero-width spaces around
        "T 👍",
        "  \tTD。。 ",
    ],
)
def test_a_reply_that_is_only_a_stop_keyword_is_an_opt_out(text):
    assert is_opt_out(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "。",
        "Thanks",
        "TDK",
        "T D",
        "TT",
        "ok",
        "Y",
        "不要退订了吗",
        "回T退订",
        "退订了吗？",
        "我不想退订",
        "please stop sending",
        "STOP IT",
        "stopp",
        "谢谢",
        "1",
    ],
)
def test_a_reply_that_merely_contains_a_keyword_is_not(text):
    assert not is_opt_out(text)


def test_normalize_reply_folds_width_and_case_and_strips_edges_only():
    assert normalize_reply(" ＴＤ！") == "td"
    assert normalize_reply("「Stop, please」") == "stop, please"


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("13812345678", "+8613812345678"),
        ("138 1234 5678", "+8613812345678"),
        ("138-1234-5678", "+8613812345678"),
        ("+86 138 1234 5678", "+8613812345678"),
        ("+86-13812345678", "+8613812345678"),
        ("008613812345678", "+8613812345678"),
        ("8613812345678", "+8613812345678"),
        ("(+86) 138.1234.5678", "+8613812345678"),
        ("１３８１２３４５６７８", "+8613812345678"),  # full-width digits
        ("＋８６１３８１２３４５６７８", "+8613812345678"),
        ("19912345678", "+8619912345678"),
        ("+14155552671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+852 6123 4567", "+85261234567"),
    ],
)
def test_phone_numbers_become_e164(raw, e164):
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "abc",
        "12812345678",  # not a mobile prefix
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "+86 10 1234 5678",  # Beijing landline: no SMS
        "010-12345678",
        "4155552671",  # foreign without its country code
        "+0123456789",
        "+1234567890123456",  # 16 digits
        "138１２３４５６７８x",
        "١٣٨١٢٣٤٥٦٧٨",  # Arabic-Indic digits are not a number here
        "zhang@example.com",
    ],
)
def test_what_is_not_a_phone_number_is_none(raw):
    assert normalize_phone(raw) is None


def test_only_mainland_national_numbers_are_known():
    with pytest.raises(ValueError, match="CN only"):
        normalize_phone("07700900123", default_region="GB")
