"""Stage 5, delivery: the outbox's queued messages out through SMS and e-mail providers, call lists
for the shop's staff, receipts, replies and opt-outs back in (docs/delivery.md)."""
