"""`edgefleet registry ls` and `show`: the rows read from a registry, the cells and lines printed of them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgefleet.cli import app
from edgefleet.cli.registry import (
    compiler_lines,
    manifest_lines,
    model_cells,
    model_rows,
    version_cells,
    version_rows,
)
from edgefleet.flows.registry import LocalRegistryWriter
from edgefleet.kernel.contracts.manifest import CompilerReport, CpuOperation
from tests.device.store_fixtures import VersionFactory

runner = CliRunner()


def _published(registry: LocalRegistryWriter, make_version: VersionFactory) -> LocalRegistryWriter:
    for model, version in (("birds", "1.0.0"), ("birds", "1.1.0"), ("cats", "0.1.0")):
        registry.publish_version(model, version, make_version(model, version))
    registry.promote("birds", "1.0.0", "stable", by="test")
    registry.promote("birds", "1.1.0", "canary", by="test")
    return registry


def test_the_rows_of_models_and_of_one_models_versions(local_registry, make_version) -> None:
    registry = _published(local_registry, make_version)
    assert model_rows(registry) == [
        {"model": "birds", "versions": 2, "latest": "1.1.0", "channels": {"canary": "1.1.0", "stable": "1.0.0"}},
        {"model": "cats", "versions": 1, "latest": "0.1.0", "channels": {}},
    ]
    rows = version_rows(registry, "birds")
    assert [(row["version"], row["channels"], row["variants"]) for row in rows] == [
        ("1.0.0", ["stable"], ["cpu", "edgetpu"]), ("1.1.0", ["canary"], ["cpu", "edgetpu"])]


def test_the_cells_of_a_listing() -> None:
    assert model_cells({"model": "cats", "versions": 0, "latest": None, "channels": {}}) == ("cats", "0", "-", "-")
    assert model_cells({"model": "birds", "versions": 2, "latest": "1.1.0",
                        "channels": {"stable": "1.0.0", "canary": "1.1.0"}})[3] == "canary -> 1.1.0, stable -> 1.0.0"
    row = {"version": "1.0.0", "created_at": "2026-12-07T09:30:00.123+00:00", "variants": ["cpu", "edgetpu"],
           "channels": [], "float_accuracy": 0.9, "int8_accuracy": None, "tpu_fraction": 1.0}
    assert version_cells(row) == ("1.0.0", "2026-12-07 09:30:00", "cpu, edgetpu", "-", "90.0%", "-", "100.0%")


def test_the_compiler_lines_name_what_stays_on_the_cpu(local_registry, make_version) -> None:
    manifest = _published(local_registry, make_version).read_manifest("cats", "0.1.0").manifest
    report = CompilerReport(compiler_version="16.0", operations_total=10, operations_on_tpu=9, operations_on_cpu=1,
                            cpu_operations=(CpuOperation(operator="SOFTMAX", count=1, reason="not mapped"),))
    assert compiler_lines(manifest.model_copy(update={"compiler": report})) == [
        "Edge TPU: 9/10 operations on the TPU (90.0%), 1 subgraph(s), compiler 16.0",
        "  on CPU: SOFTMAX x1: not mapped",
        f"0 golden outputs (tolerance {manifest.golden_tolerance:g})",
    ]
    assert compiler_lines(manifest)[0] == "no Edge TPU variant (not compiled): devices run the CPU model"


def test_the_input_line_names_the_class_ids_the_labels_span(local_registry, make_version) -> None:
    signed = _published(local_registry, make_version).read_manifest("cats", "0.1.0")
    gapped = signed._replace(manifest=signed.manifest.model_copy(update={"label_count": 90}))
    assert manifest_lines(gapped)[2].endswith(f"class ids 0-89 in {signed.manifest.labels_file}")
    unknown = signed._replace(manifest=signed.manifest.model_copy(update={"label_count": None}))
    assert manifest_lines(unknown)[2].endswith(f"; labels in {signed.manifest.labels_file}")


def test_ls_and_show_print_tables_and_json(local_registry, make_version) -> None:
    uri = str(_published(local_registry, make_version).root)
    listed = runner.invoke(app, ["registry", "ls", "--registry", uri], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "canary -> 1.1.0, stable -> 1.0.0" in listed.output and "cats" in listed.output
    versions = json.loads(runner.invoke(app, ["registry", "ls", "birds", "--json", "--registry", uri]).output)
    assert [row["version"] for row in versions] == ["1.0.0", "1.1.0"]
    assert "nothing published for dogs" in runner.invoke(app, ["registry", "ls", "dogs", "--registry", uri]).output
    shown = runner.invoke(app, ["registry", "show", "birds", "1.0.0", "--registry", uri], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for part in ("birds 1.0.0 (classification)", "manifest sha256", "model_edgetpu.tflite", "metrics",
                 "no Edge TPU variant", "golden outputs"):
        assert part in shown.output
