"""Commands registered on the edgefleet-agent app (filled in by its owner)."""
