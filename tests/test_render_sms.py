"""SMS arithmetic: GSM-7 and UCS-2 segment boundaries, extension characters, signature and footer."""

from __future__ import annotations

import pytest

from huitouke.render.sms import GSM7_BASIC, GSM7_EXTENSION, SmsCount, count_sms, finalize_sms, sms_signature


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_message_is_160_septets_then_153_per_segment(length, segments):
    count = count_sms("a" * length)
    assert (count.encoding, count.units, count.segments) == ("gsm7", length, segments)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_any_chinese_character_makes_ucs2_with_70_then_67_per_segment(length, segments):
    count = count_sms("好" * length)
    assert (count.encoding, count.units, count.segments) == ("ucs2", length, segments)


def test_one_chinese_character_in_latin_text_switches_the_whole_message_to_ucs2():
    assert count_sms("a" * 160).segments == 1
    count = count_sms("a" * 159 + "好")
    assert (count.encoding, count.segments) == ("ucs2", 3)


@pytest.mark.parametrize("char", list("€[]{}^~\\|"))
def test_gsm7_extension_characters_count_two_septets(char):
    assert count_sms(char).units == 2
    assert count_sms("a" * 158 + char).segments == 1  # 160 septets
    assert count_sms("a" * 159 + char).segments == 2  # 161 septets


def test_gsm7_basic_non_ascii_characters_stay_gsm7():
    text = "Café £5 ¥10 Ñoño Øre ΔΦΓ §¿¡ à ü"
    assert count_sms(text) == SmsCount("gsm7", len(text), 1)
    assert count_sms("Ñandú").encoding == "ucs2"  # ú is not in the GSM table (ù is)


def test_characters_outside_both_gsm7_tables_make_ucs2():
    for char in "`ç【】，。😀":
        if char in GSM7_BASIC or char in GSM7_EXTENSION:
            continue
        assert count_sms("a" + char).encoding == "ucs2", char


def test_an_extension_character_is_never_split_across_two_segments():
    # 152 + 2 + 152 = 306 septets fit 2 x 153 arithmetically, but the escape pair cannot straddle
    # the boundary: segment 1 holds 152, segment 2 holds the pair + 151, segment 3 the last one.
    text = "a" * 152 + "€" + "a" * 152
    assert count_sms(text).units == 306
    assert count_sms(text).segments == 3
    assert count_sms("a" * 151 + "€" + "a" * 153).segments == 2


def test_emoji_count_two_ucs2_units_and_are_never_split():
    assert count_sms("😀").units == 2
    assert count_sms("好" * 68 + "😀").segments == 1  # 70 units
    assert count_sms("好" * 69 + "😀").segments == 2  # 71 units
    # 66 + 2 + 66 = 134 units, but the surrogate pair cannot straddle the 67-unit boundary.
    assert count_sms("好" * 66 + "😀" + "好" * 66).segments == 3
    assert count_sms("好" * 65 + "😀" + "好" * 67).segments == 2


def test_finalize_adds_the_signature_in_front_and_the_footer_at_the_end():
    assert finalize_sms("  感谢您的支持！\n", "暖暖母婴", "回T退订") == "【暖暖母婴】感谢您的支持！回T退订"


def test_finalize_separates_the_footer_by_a_space_unless_after_chinese_closing_punctuation():
    assert finalize_sms("记得来领券", "店", "回T退订") == "【店】记得来领券 回T退订"
    assert finalize_sms("Thanks.", "Shop", "Reply STOP to opt out") == "【Shop】Thanks. Reply STOP to opt out"


def test_finalize_adds_signature_and_footer_exactly_once():
    once = finalize_sms("感谢您的支持！", "暖暖母婴", "回T退订")
    assert finalize_sms(once, "暖暖母婴", "回T退订") == once
    assert once.count("【暖暖母婴】") == 1 and once.count("回T退订") == 1


def test_signature_without_brackets_keeps_a_latin_message_gsm7():
    assert sms_signature("Nuannuan", brackets=False) == "Nuannuan: "
    text = finalize_sms("Thank you!", "Nuannuan", "Reply STOP to opt out", brackets=False)
    assert text == "Nuannuan: Thank you! Reply STOP to opt out"
    assert count_sms(text).encoding == "gsm7"
    assert count_sms(finalize_sms("Thank you!", "Nuannuan", "STOP")).encoding == "ucs2"  # 【】


def test_empty_shop_name_or_footer_adds_nothing():
    assert finalize_sms("你好。", "", "") == "你好。"
