"""`python -m edgefleet.cli ...`: the same as the `edgefleet` console script."""

from edgefleet.cli.app import app

app()
