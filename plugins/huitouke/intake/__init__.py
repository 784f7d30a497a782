"""Stage 1 of the daily run: read the day's orders from a source, validate them, upsert them."""
