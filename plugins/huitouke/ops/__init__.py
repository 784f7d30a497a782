"""Operations: the daily run's params, its alerts (notifier, deadlines, the day's failure share)."""
