"""`edgefleet`: the operator CLI. `app` is built in `edgefleet.cli.app`; each group is a module here."""

from edgefleet.cli.app import app

__all__ = ["app"]
