"""Channel pointer upkeep: the scheduled re-signing of channel pointers before they expire."""
