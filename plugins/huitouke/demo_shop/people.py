"""The demo shop's customers as people: names, nicknames, phone numbers, e-mail addresses,
birthdays and registration times, drawn from the lookups below (phones and e-mails distinct)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from huitouke.demo_shop.arrays import DAY, fmt_days, fmt_seconds

FAMILY_NAMES = np.array(
    list(
        "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈"
        "姚卢姜崔钟谭陆汪范金石廖贾夏韦方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严武戴莫孔向汤"
    )
    + ["欧阳", "司马", "上官"]
)
GIVEN_FEMALE = np.array(list("芳娜敏静丽娟艳秀英华慧巧美琳雪梅婷晶妍欣怡佳雨萱颖洁倩璐瑶涵玲燕霞丹"))
GIVEN_MALE = np.array(list("伟强磊军洋勇杰涛明超刚平辉鹏浩宇俊帆志峰建文斌博然鑫宁凯亮晨"))
NICK_PREFIX = np.array(["小", "大", "爱吃", "快乐的", "甜甜的", "懒懒的", "阳光", "开心", "会飞的", "安静的"])
NICK_NOUN = np.array(
    ["猫", "兔子", "鱼", "糖果", "宝贝", "妈咪", "小熊", "豆豆", "橙子", "布丁", "麻麻", "奶爸"]
)
# fmt: off
PHONE_PREFIXES = np.array(
    [130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156, 157, 158, 159, 166,
     170, 171, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 191, 198, 199],
    dtype=np.int64,
)
# fmt: on
EMAIL_DOMAINS = np.array(["163.com", "126.com", "sina.com", "foxmail.com", "gmail.com", "outlook.com"])
LOWER = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def people(rng: np.random.Generator, n: int, first_ts: np.ndarray) -> dict[str, np.ndarray]:
    """Names, nicknames, phones, e-mails, birthdays and registration times of n customers.

    Drawn in that order from ``rng``: the order is part of the shop (same seed, same people).
    """
    name = _names(rng, n)
    nickname = _nicknames(rng, n)
    phone = _unique_draw(rng, n, _draw_phones)
    email = _unique_draw(rng, n, _draw_emails)
    email[rng.random(n) >= 0.65] = None
    birthday = _birthdays(rng, n)
    registered = _registered_at(rng, first_ts)
    return {
        "nickname": nickname,
        "name": name,
        "phone": phone,
        "email": email,
        "birthday": birthday,
        "registered_at": registered,
    }


def _names(rng: np.random.Generator, n: int) -> np.ndarray:
    """Family name (common ones more often) and one or two given characters by sex."""
    rank = np.arange(1, FAMILY_NAMES.size + 1)
    family_p = rank**-0.9 / (rank**-0.9).sum()
    family = FAMILY_NAMES[rng.choice(FAMILY_NAMES.size, size=n, p=family_p)]
    female = rng.random(n) < 0.65  # a mother-and-baby and women's clothing shop
    g1 = _given_names(rng, female)
    g2 = _given_names(rng, female)
    g2 = np.where(rng.random(n) < 0.7, g2, "")
    return np.char.add(np.char.add(family, g1), g2)


def _given_names(rng: np.random.Generator, female: np.ndarray) -> np.ndarray:
    n = female.size
    return np.where(
        female,
        GIVEN_FEMALE[rng.integers(0, GIVEN_FEMALE.size, n)],
        GIVEN_MALE[rng.integers(0, GIVEN_MALE.size, n)],
    )


def _nicknames(rng: np.random.Generator, n: int) -> np.ndarray:
    """A Taobao default (tb + digits), a cute Chinese one, or a latin handle, about a third each."""
    pattern = rng.choice(3, size=n, p=[0.35, 0.35, 0.30])
    taobao = np.char.add("tb", rng.integers(10**8, 10**11, size=n).astype(str))
    cute = np.char.add(
        np.char.add(
            NICK_PREFIX[rng.integers(0, NICK_PREFIX.size, n)], NICK_NOUN[rng.integers(0, NICK_NOUN.size, n)]
        ),
        np.where(rng.random(n) < 0.6, rng.integers(1, 2025, size=n).astype(str), ""),
    )
    latin = np.char.add(
        np.char.add(_random_strings(rng, n, LOWER, 3, 8), np.where(rng.random(n) < 0.4, "_", "")),
        rng.integers(1, 10_000, size=n).astype(str),
    )
    return np.where(pattern == 0, taobao, np.where(pattern == 1, cute, latin))


def _draw_phones(g: np.random.Generator, k: int) -> np.ndarray:
    """k mainland mobile numbers (maybe repeated; see :func:`_unique_draw`)."""
    return (PHONE_PREFIXES[g.integers(0, PHONE_PREFIXES.size, k)] * 10**8 + g.integers(0, 10**8, k)).astype(
        str
    )


def _draw_emails(g: np.random.Generator, k: int) -> np.ndarray:
    """k e-mail addresses, half of them QQ numbers (maybe repeated; see :func:`_unique_draw`)."""
    qq = np.char.add(g.integers(10_000, 3 * 10**9, size=k).astype(str), "@qq.com")
    local = np.char.add(_random_strings(g, k, LOWER, 4, 8), g.integers(10, 10_000, size=k).astype(str))
    other = np.char.add(np.char.add(local, "@"), EMAIL_DOMAINS[g.integers(0, EMAIL_DOMAINS.size, k)])
    return np.where(g.random(k) < 0.5, qq, other)


def _birthdays(rng: np.random.Generator, n: int) -> np.ndarray:
    """'YYYY-MM-DD' around 1991 for the 40% who gave one, None for the others."""
    birth_year = np.clip(np.round(rng.normal(1991, 7, n)), 1960, 2007).astype(np.int64)
    year_start = (np.array(birth_year - 1970, dtype="timedelta64[Y]") + np.datetime64("1970", "Y")).astype(
        "datetime64[D]"
    )
    birth = year_start.astype(np.int64) + rng.integers(0, 365, size=n)
    birthday = fmt_days(birth).astype(object)
    birthday[rng.random(n) >= 0.40] = None
    return birthday


def _registered_at(rng: np.random.Generator, first_ts: np.ndarray) -> np.ndarray:
    """Registration time: minutes before the first purchase for most, up to two years for others."""
    n = first_ts.size
    quick = rng.random(n) < 0.55  # most register right before their first purchase
    delay = np.where(quick, rng.integers(60, 3600, size=n), rng.integers(DAY, 730 * DAY, size=n))
    return fmt_seconds(first_ts - delay)


def _random_strings(rng: np.random.Generator, n: int, alphabet: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """n random strings of length lo..hi over alphabet (numpy U array), without a Python loop."""
    chars = alphabet[rng.integers(0, alphabet.size, size=(n, hi))]
    lengths = rng.integers(lo, hi + 1, size=n)
    chars[np.arange(hi)[None, :] >= lengths[:, None]] = ""  # trailing NULs are dropped by numpy
    return np.ascontiguousarray(chars.astype("U1")).view(f"U{hi}").reshape(-1)


def _unique_draw(
    rng: np.random.Generator, n: int, draw: Callable[[np.random.Generator, int], np.ndarray]
) -> np.ndarray:
    """n draws from draw() with duplicates redrawn until all are distinct (deterministic)."""
    values = draw(rng, n).astype(object)
    for _ in range(100):
        duplicated = pd.Series(values).duplicated().to_numpy()
        if not duplicated.any():
            return values
        values[duplicated] = draw(rng, int(duplicated.sum())).astype(object)
    raise RuntimeError("could not draw distinct values; the space is too small for the shop")
