"""SMS arithmetic: the signature and the opt-out footer, the encoding, and the segment count.

Operators bill SMS by segment, so the count must be exact (3GPP TS 23.038 / 23.040):

- **GSM-7** when every character is in the GSM 03.38 basic table or its extension table. A
  single message holds 160 septets; a long one is cut into segments of 153 (7 septets go to the
  concatenation header). Extension characters (``€ [ ] { } ^ ~ \\ |`` and form feed) take two
  septets, an escape and the character, and a pair is never split across two segments.
- **UCS-2** as soon as one character is outside those tables: any Chinese character, and the
  signature's brackets 【】 too. 70 UTF-16 units in a single message, 67 per segment of a long
  one; a character outside the Basic Multilingual Plane (most emoji) takes two units, and a
  surrogate pair is never split either.

:func:`finalize_sms` is the one place where a marketing SMS gets its signature (``【店名】`` in
front, as Chinese operators require) and the shop's opt-out footer (``回T退订`` by default) at the
end, each exactly once: calling it on its own output changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "SmsCount",
    "count_sms",
    "finalize_sms",
    "sms_signature",
    "sms_units",
]

Encoding = Literal["gsm7", "ucs2"]

# The GSM 03.38 default alphabet (without the escape character 0x1B) ...
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# ... and its extension table: each of these costs two septets (escape + character).
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67

_NON_GSM = re.compile("[^" + "".join(re.escape(c) for c in sorted(GSM7_BASIC | GSM7_EXTENSION)) + "]")
_GSM_EXTENSION = re.compile("[" + "".join(re.escape(c) for c in sorted(GSM7_EXTENSION)) + "]")
# After Chinese closing punctuation the footer follows directly (…领取。回T退订); after anything
# else a space separates it (…领取 回T退订, …help. Reply STOP).
_CLOSING = frozenset("。！？…，；：）】」』～")


@dataclass(frozen=True, slots=True)
class SmsCount:
    """How a text travels: its encoding, its length in septets (GSM-7) or UTF-16 units (UCS-2),
    and the number of billed segments."""

    encoding: Encoding
    units: int
    segments: int


def _packed_segments(weights: list[int], capacity: int) -> int:
    """Segments needed when a character of weight 2 may not straddle two segments."""
    segments, used = 1, 0
    for weight in weights:
        if used + weight > capacity:
            segments, used = segments + 1, 0
        used += weight
    return segments


def sms_units(text: str) -> tuple[Encoding, int, int]:
    """``(encoding, units, segments)`` of ``text``: :func:`count_sms` without the object."""
    if _NON_GSM.search(text) is None:
        extended = len(_GSM_EXTENSION.findall(text))
        units = len(text) + extended
        if units <= GSM7_SINGLE:
            return "gsm7", units, 1
        if not extended:
            return "gsm7", units, -(-units // GSM7_MULTI)
        weights = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return "gsm7", units, _packed_segments(weights, GSM7_MULTI)
    units = len(text.encode("utf-16-le", "surrogatepass")) >> 1  # a character outside the BMP is 2 units
    if units <= UCS2_SINGLE:
        return "ucs2", units, 1
    if units == len(text):
        return "ucs2", units, -(-units // UCS2_MULTI)
    weights = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return "ucs2", units, _packed_segments(weights, UCS2_MULTI)


def count_sms(text: str) -> SmsCount:
    """The encoding, length and segment count of ``text`` exactly as it will be sent."""
    return SmsCount(*sms_units(text))


def sms_signature(shop_name: str, brackets: bool = True) -> str:
    """``【shop name】`` (Chinese operators require it in front), or ``shop name: `` without brackets
    (the brackets alone make a message UCS-2; an all-Latin shop may prefer GSM-7)."""
    name = shop_name.strip()
    if not name:
        return ""
    return f"【{name}】" if brackets else f"{name}: "


def finalize_sms(body: str, shop_name: str, footer: str, *, brackets: bool = True) -> str:
    """The text that is sent: signature + body + opt-out footer, each added exactly once.

    Surrounding white space of the body is dropped. The signature is not added again when the body
    already starts with it, nor the footer when the body already ends with it, so
    ``finalize_sms(finalize_sms(b, ...), ...) == finalize_sms(b, ...)``. The footer follows Chinese
    closing punctuation directly (``…领取。回T退订``) and anything else after a space.
    """
    text = body.strip()
    signature = sms_signature(shop_name, brackets)
    if signature and not text.startswith(signature):
        text = signature + text
    footer = footer.strip()
    if footer and not text.endswith(footer):
        text = f"{text}{footer}" if not text or text[-1] in _CLOSING else f"{text} {footer}"
    return text
