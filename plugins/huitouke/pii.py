"""Masking of personal data in logs: the one place that knows how phone numbers, e-mail
addresses and names are hidden.

Library code masks the values it knows are personal (:func:`mask_phone`, :func:`mask_email`,
:func:`mask_name`); :class:`PiiMaskingFilter`, attached by :func:`get_logger` to every huitouke module's logger, is
a safety net that masks anything that looks like a phone number or an e-mail address.
"""

from __future__ import annotations

import logging
import re

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
# Mainland mobile numbers (11 digits starting 1[3-9]) and international +NN... numbers.
_PHONE = re.compile(r"(?<!\d)(\+?\d{2,3}[ -]?)?(1[3-9]\d)[ -]?\d{4}[ -]?(\d{4})(?!\d)")


def mask_phone(phone: str | None) -> str:
    """``13812345678`` -> ``138****5678``."""
    if not phone:
        return ""
    digits = re.sub(r"\D", "", str(phone))
    if len(digits) < 7:
        return "*" * len(digits)
    return f"{digits[:3]}****{digits[-4:]}"


def mask_email(email: str | None) -> str:
    """``zhang.san@example.com`` -> ``z***@example.com``."""
    if not email or "@" not in str(email):
        return "***" if email else ""
    local, _, domain = str(email).partition("@")
    return f"{local[:1]}***@{domain}"


def mask_name(name: str | None) -> str:
    """``张三丰`` -> ``张**``; ``Alice Smith`` -> ``A**********``."""
    if not name:
        return ""
    text = str(name)
    return text[:1] + "*" * (len(text) - 1)


def mask_text(text: str) -> str:
    """Mask every phone number and e-mail address found in free text."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(0).split('@', 1)[1]}", text)
    return _PHONE.sub(lambda m: f"{m.group(2)}****{m.group(3)}", text)


class PiiMaskingFilter(logging.Filter):
    """A logging filter that masks phone numbers and e-mail addresses in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix here
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def get_logger(name: str) -> logging.Logger:
    """The logger every huitouke module uses: a standard logger with the masking filter attached.

    (Filters on a parent logger do not apply to its children's records, hence one per module.)
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, PiiMaskingFilter) for f in logger.filters):
        logger.addFilter(PiiMaskingFilter())
    return logger
