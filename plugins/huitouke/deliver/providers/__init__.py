"""One class per provider API (:mod:`.base` states the contract every one of them keeps)."""
