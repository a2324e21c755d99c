"""edgefleet: image models from training to fleets of Coral Edge TPU devices, and back."""

__version__ = "0.1.0"
