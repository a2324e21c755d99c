"""Operator CLI command groups; each module defines a typer app mounted by edgefleet.cli."""
