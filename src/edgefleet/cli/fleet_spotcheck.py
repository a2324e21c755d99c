"""The labelled spot check in `fleet status` (issue 25): per device shown that has labels, the accuracy on its
labelled sample beside the estimated one, and how far the estimate is off; per model version, the same pooled.
`fleet status` reads the report once (`edgefleet.monitor.spotcheck_report`: one listing of the labelled records,
then one record per device shown that has one), puts it in `--json` as `spot_check`, and calls
`print_spot_checks` after its table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from edgefleet.monitor.spotcheck import SpotCheckReport, SpotCheckResult, VersionSpotCheck


def spot_check_text(result: SpotCheckResult) -> str:
    """'cam-1 1.0.0: labelled accuracy 0.82 (0.71-0.90) on 57 frames; estimate off by +0.05 (-0.04 to +0.15)'."""
    text = (f"{result.device_id} {result.model_version}: labelled accuracy {result.accuracy.text()} on "
            f"{result.labelled} frame(s)")
    text += f"; estimate off by {result.bias.text(signed=True)}" if result.bias is not None else ""
    if result.not_counted:
        text += (f" ({result.not_counted} labelled frame(s) not counted: signed by a revoked key, or recorded "
                 "without the key that signed them)")
    return text


def version_spot_check_text(check: VersionSpotCheck) -> str:
    """'birds:1.0.0: labelled accuracy 0.82 (0.77-0.86) on 300 frame(s) of 3 device(s); estimate off by ...'."""
    text = (f"{check.model}:{check.model_version}: labelled accuracy {check.accuracy.text()} on {check.labelled} "
            f"frame(s) of {check.devices} device(s)")
    if check.bias is None:
        return text
    return text + f"; estimate off by {check.bias.text(signed=True)} (over {check.bias_devices} device(s))"


def print_spot_checks(console: Console, report: SpotCheckReport | None) -> None:
    """The spot-check lines of `fleet status` (nothing when no registry is configured or nothing is labelled)."""
    if report is None:
        return
    if report.error is not None:
        console.print(f"spot check labels not read from {report.registry}: {report.error}", highlight=False,
                      soft_wrap=True)
        return
    from edgefleet.monitor.spotcheck import SPOT_CHECK_CAVEAT

    if report.devices:
        console.print(SPOT_CHECK_CAVEAT, highlight=False, soft_wrap=True)
    for result in report.devices:
        console.print(f"spot check {spot_check_text(result)}", highlight=False, soft_wrap=True)
    for check in report.versions:
        console.print(f"spot check {version_spot_check_text(check)}", highlight=False, soft_wrap=True)
