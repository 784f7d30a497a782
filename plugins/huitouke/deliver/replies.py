"""What a customer's reply means: whether it says stop, and which phone number it came from.

Both are hand-written rather than taken from a library: the stop rule is huitouke's own policy
(docs/delivery.md, "Opt-outs"), and ``phonenumbers`` is not a dependency while the one national
rule needed here (mainland mobiles) is a single pattern.
"""

from __future__ import annotations

import re
import unicodedata

# The whole reply, once normalized, must be one of these. The list (T, TD, 退订, R, N,
# STOP, UNSUBSCRIBE), plus Twilio's standard opt-out keywords, which Twilio itself enforces (a
# number that sent one of them is refused with error 21610), so huitouke records them too.
OPT_OUT_KEYWORDS: frozenset[str] = frozenset(
    {
        "t",
        "td",
        "退订",
        "r",
        "n",
        "stop",
        "unsubscribe",
        "stopall",
        "cancel",
        "end",
        "quit",
        "optout",
        "revoke",
    }
)

# Unicode categories stripped from both ends of a reply: punctuation (P*), symbols (S*: emoji,
# "~", "+"), separators (Z*: spaces) and control characters (Cc, Cf: newlines, zero-width marks).
_EDGE_CATEGORIES = ("P", "S", "Z", "C")

_CN_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_CN_MOBILE_E164 = re.compile(r"\+861[3-9][0-9]{9}")  # already normalized: as it is
_PHONE_SEPARATORS = re.compile(r"[\s\-().\u00a0]")


def normalize_reply(text: str) -> str:
    """``" ＴＤ！"`` -> ``"td"``: NFKC (full-width letters and punctuation to ASCII), case folded,
    punctuation, symbols and whitespace stripped from both ends (inner characters kept)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    start, end = 0, len(folded)
    while start < end and unicodedata.category(folded[start])[0] in _EDGE_CATEGORIES:
        start += 1
    while end > start and unicodedata.category(folded[end - 1])[0] in _EDGE_CATEGORIES:
        end -= 1
    return folded[start:end]


def is_opt_out(text: str) -> bool:
    """Whether a reply says stop: the whole normalized reply (:func:`normalize_reply`) is one of
    :data:`OPT_OUT_KEYWORDS`. ``"T。"``, ``" td "``, ``"ＴＤ"``, ``"退订！"`` are; ``"Thanks"``,
    ``"TDK"``, ``"T D"``, ``"不要退订了吗"``, ``"回T退订"`` are not (a keyword inside other text is
    not a request: the reply is shown to the shop instead)."""
    return normalize_reply(text) in OPT_OUT_KEYWORDS


def normalize_phone(raw: str | None, default_region: str = "CN") -> str | None:
    """A phone number as E.164 (``+8613812345678``), or None when it is not one.

    Mainland mobiles (11 digits, ``1[3-9]…``) are recognised with or without ``+86``, ``0086`` or
    ``86``, with spaces, dashes, dots or brackets, full-width digits too. Any other number must
    carry its ``+`` (or ``00``) country code and is passed through when it has 7 to 15 digits;
    ``+86`` numbers that are not mobiles (landlines cannot take SMS) are None. ``default_region``
    says how a number without a country code is read: only ``"CN"`` is known.
    """
    if default_region != "CN":
        raise ValueError(f"normalize_phone knows national numbers of CN only, not {default_region!r}")
    if raw is None:
        return None
    if isinstance(raw, str) and _CN_MOBILE_E164.fullmatch(raw):  # the stored form: a claim's every row
        return raw
    text = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", str(raw)))
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+86") or (text.startswith("86") and len(text) == 13):
        national = text.removeprefix("+").removeprefix("86")
        return "+86" + national if _CN_MOBILE.fullmatch(national) else None
    if _CN_MOBILE.fullmatch(text):
        return "+86" + text
    return text if _E164.fullmatch(text) else None
