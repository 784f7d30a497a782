"""Phone numbers, e-mail addresses and names never reach the logs in clear."""

from __future__ import annotations

import logging

from huitouke.pii import get_logger, mask_email, mask_name, mask_phone, mask_text


def test_masks():
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("+86 138-1234-5678") == "861****5678"
    assert mask_email("zhang.san@example.com") == "z***@example.com"
    assert mask_name("张三丰") == "张**"
    assert mask_phone(None) == mask_email("") == mask_name(None) == ""


def test_free_text_is_masked():
    text = mask_text("call 13812345678 or +86 139 1234 5678, mail li.si@shop.cn")
    assert "13812345678" not in text and "1234 5678" not in text and "li.si@" not in text
    assert "138****5678" in text and "l***@shop.cn" in text


def test_order_ids_and_amounts_are_not_mistaken_for_phone_numbers():
    assert mask_text("order T2025121200001234 paid 1299.00") == "order T2025121200001234 paid 1299.00"


def test_huitouke_loggers_mask_what_slips_through(caplog):
    log = get_logger("huitouke.some.module")
    with caplog.at_level(logging.INFO, logger="huitouke.some.module"):
        log.info("customer %s wrote from %s", "13812345678", "wang@example.com")
    assert "13812345678" not in caplog.text and "wang@example.com" not in caplog.text
    assert "138****5678" in caplog.text
