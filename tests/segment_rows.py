"""A plain segment row (classify's columns) that campaign tests vary one field at a time."""

PLAIN_SEGMENT = {
    "lifecycle": "repeat",
    "r_score": 3,
    "f_score": 3,
    "m_score": 3,
    "member_tier": "normal",
    "value_tier": "mid",
    "low_value_acquisition": False,
    "category_group": "food",
    "acquisition_source": "organic",
    "days_since_first_order": 200,
    "days_since_last_order": 60,
    "paid_orders": 2,
    "total_cents": 20_000,
    "aov_cents": 10_000,
}
