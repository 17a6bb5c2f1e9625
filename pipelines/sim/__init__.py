"""The embedded market simulator: a panel with cascades, no exchange and no key."""
