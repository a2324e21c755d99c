"""The demo's closing panel names where the demo's files are (`--workdir`), and shows paths as they are; the
demo went as intended only when the bad release stopped at its shadow wave."""

from __future__ import annotations

import shlex

from rich.console import Console

from edgefleet.demo_report import DemoReport, RolloutSummary, intended, print_closing


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


def _report(bad: RolloutSummary) -> DemoReport:
    good = [RolloutSummary(id=f"shapes-{v}", version=v, outcome="completed", halted_by=[], devices_rolled_back=[])
            for v in ("1.0.0", "1.1.0")]
    return DemoReport(rollouts=[*good, bad], devices={"sim-1": "shapes:1.1.0", "sim-2": "shapes:1.1.0"})


def test_the_bad_release_is_as_intended_only_when_its_shadow_wave_stopped_it() -> None:
    shadow = RolloutSummary(id="shapes-1.2.0", version="1.2.0", outcome="halted",
                            halted_by=["shadow_top1_agreement"], devices_rolled_back=[])
    canary = shadow.model_copy(update={"halted_by": ["class_mix_control"], "devices_rolled_back": ["sim-1"]})
    acted = shadow.model_copy(update={"devices_rolled_back": ["sim-1"]})

    assert intended(_report(shadow), ["1.0.0", "1.1.0"], "1.2.0")
    assert not intended(_report(canary), ["1.0.0", "1.1.0"], "1.2.0")  # a device acted on it first
    assert not intended(_report(acted), ["1.0.0", "1.1.0"], "1.2.0")
