"""The device agent: runs on every Coral device; owns the contracts both sides share."""
