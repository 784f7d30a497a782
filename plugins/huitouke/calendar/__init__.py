"""The daily run's calendar: each business day's stateful stages run once, in date order.

- :mod:`huitouke.calendar.rules`: the contract as one decision over plain data (:func:`decide`);
- :mod:`huitouke.calendar.persist`: the ``business_days`` rows;
- :mod:`huitouke.calendar.daily`: :func:`open_day` before the stateful stages, :func:`close_day`
  after them (the DAG's ``open_business_day`` and ``close_business_day`` tasks).

See docs/design.md, "The daily run's calendar".
"""
