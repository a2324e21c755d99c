"""The demo's closing panel names where the demo's files are (`--workdir`), and shows paths as they are."""

from __future__ import annotations

import shlex

from rich.console import Console

from edgefleet.demo_report import print_closing


def _closing(workdir: str, summary: list[tuple[str, str]]) -> str:
    out = Console(record=True, width=400)
    print_closing(summary, ok=True, elapsed_s=60.0, workdir=workdir, out=out)
    return out.export_text()


def test_the_closing_panel_points_at_the_workdir_the_demo_used() -> None:
    shown = _closing("/tmp/elsewhere/demo", [("Registry", "/tmp/elsewhere/demo/registry")])

    assert ".edgefleet/demo" not in shown
    assert "the demo's files stay in /tmp/elsewhere/demo until the next run" in shown
    assert "edgefleet registry ls --registry /tmp/elsewhere/demo/registry" in shown
    assert "--public-key /tmp/elsewhere/demo/keys/release-signing.key.pub" in shown
    assert "edgefleet fleet status --db /tmp/elsewhere/demo/fleet.sqlite" in shown


def test_paths_are_shown_whole_and_ready_to_paste() -> None:
    workdir = "/tmp/[run 2]/demo"
    shown = _closing(workdir, [("Registry", f"{workdir}/registry"), ("Devices", "sim-1 [canary]")])

    assert f"Registry: {workdir}/registry" in shown and "sim-1 [canary]" in shown  # not eaten as markup
    assert f"edgefleet fleet status --db {shlex.quote(workdir + '/fleet.sqlite')}" in shown
