"""The shadow candidate on the device (issue 25): which frames it runs on, what the pairs add up to, how it is
named (verified like an activation), and the agent running it beside the primary without acting on it."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.agent.shadow import SHADOW_POINTER, check_candidate, clear_shadow, set_shadow
from edgefleet.device.agent.shadow_stats import (
    MAX_PENDING_PAIRS,
    SHADOW_REPORT_FILE,
    ShadowReport,
    ShadowTally,
    ShareSampler,
)
from edgefleet.device.telemetry.builder import InferenceRecord, TelemetryBuilder
from edgefleet.kernel.contracts.layout import CURRENT_POINTER
from edgefleet.kernel.contracts.status import read_boot_id, read_status
from edgefleet.kernel.contracts.telemetry import ModelRef, score_delta_bucket
from edgefleet.kernel.errors import ConfigError, StoreError, VerificationError
from tests.device.agent.test_loop import running, sink_messages, wait_until

MODEL = "imagenet"
CANDIDATE = ModelRef(name=MODEL, version="2.0.0", variant="cpu", backend="cpu")
PRIMARY = ModelRef(name=MODEL, version="1.0.0", variant="cpu", backend="cpu")
# A model whose class ids mean something else than the primary's (Coral's iNaturalist bird classifier, where
# the primary is an ImageNet one): on the same frames its top-1 ids are as unrelated to the primary's as those
# of a model trained on shuffled labels.
SHUFFLED_STAND_IN = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"


def result(class_id: int, score: float) -> SimpleNamespace:
    return SimpleNamespace(id=class_id, label=str(class_id), score=score, box=None)


@pytest.mark.parametrize(("share", "taken"), [(0.0, 0), (0.1, 10), (0.5, 50), (1.0, 100)])
def test_the_sampler_takes_its_share_of_the_frames_evenly(share: float, taken: int) -> None:
    sampler = ShareSampler(share)
    picks = [sampler.take() for _ in range(100)]
    assert sum(picks) == taken
    if share == 0.1:
        assert [i for i, pick in enumerate(picks) if pick] == list(range(9, 100, 10))


def test_a_share_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="0..1"):
        ShareSampler(1.5)


def test_the_tally_counts_agreement_and_paired_score_deltas() -> None:
    tally = ShadowTally(CANDIDATE)
    tally.add([result(3, 0.9)], 1.0, [result(3, 0.76)], 2.0, detector=False)  # agree, delta -0.14
    tally.add([result(3, 0.9)], 1.0, [result(5, 0.58)], 2.0, detector=False)  # disagree, delta -0.32
    tally.add_error()
    summary = tally.total()
    assert (summary.frames, summary.errors, summary.top1_agree) == (3, 1, 1)
    assert {b.i: b.n for b in summary.score_delta} == {score_delta_bucket(-0.14): 1,
                                                          score_delta_bucket(-0.32): 1}
    assert {c.id: c.n for c in summary.primary.classes} == {3: 2}
    assert {c.id: c.n for c in summary.candidate.classes} == {3: 1, 5: 1}


def test_pairs_the_candidate_finished_late_go_into_the_next_window_without_holding_it_back() -> None:
    tally = ShadowTally(CANDIDATE)
    for _ in range(3):
        tally.add([result(1, 0.5)], 1.0, [result(1, 0.5)], 1.0, detector=False)
    tally.add_error()
    window = tally.take_window(2)  # the candidate lags: 4 pairs are ready when a 2-frame window closes
    assert window is not None and (window.frames, window.errors) == (2, 0)
    for _ in range(2):  # the next window has 2 frames again, with 1 new pair: it takes the oldest 2 of 3
        tally.add([result(1, 0.5)], 1.0, [result(2, 0.5)], 1.0, detector=False)
    window = tally.take_window(2)
    assert window is not None and (window.frames, window.errors, window.top1_agree) == (2, 1, 1)
    window = tally.take_window(2)
    assert window is not None and (window.frames, window.top1_agree) == (2, 0)
    assert tally.take_window(2) is None  # all taken
    total = tally.total()  # the total is never reset
    assert (total.frames, total.errors, total.top1_agree) == (6, 1, 3)


def test_a_tally_whose_windows_are_never_taken_keeps_a_bounded_backlog() -> None:
    tally = ShadowTally(CANDIDATE)
    for _ in range(MAX_PENDING_PAIRS + 5):  # telemetry mode `every` never takes a window
        tally.add([result(1, 0.5)], 1.0, [result(1, 0.5)], 1.0, detector=False)
    assert tally.total().frames == MAX_PENDING_PAIRS + 5
    assert tally.take_window(10 * MAX_PENDING_PAIRS).frames == MAX_PENDING_PAIRS


def test_a_summary_window_carries_the_shadow_summary_of_its_frames() -> None:
    tally = ShadowTally(CANDIDATE)
    builder = TelemetryBuilder("summary", 10.0, sample_results=False, max_results=1, start_time=0.0,
                               shadow=tally.take_window)
    for second in range(4):
        builder.add_inference(InferenceRecord(float(second), PRIMARY, 1.0, (result(7, 0.8),)))
    tally.add([result(7, 0.8)], 1.0, [result(9, 0.4)], 3.0, detector=False)
    (draft,) = builder.tick(10.0)
    shadow = draft.inference.shadow
    assert shadow is not None and (shadow.model, shadow.frames, shadow.top1_agree) == (CANDIDATE, 1, 0)


def test_naming_a_candidate_verifies_it_like_an_activation(releases) -> None:
    releases.install("1.0.0")
    releases.install("2.0.0", activate=False)
    with pytest.raises(StoreError, match="not installed"):
        set_shadow(releases.store, MODEL, "3.0.0")
    assert set_shadow(releases.store, MODEL, "2.0.0").version == "2.0.0"
    assert releases.store.pointer(MODEL, SHADOW_POINTER) == "2.0.0"
    assert releases.store.pointer(MODEL, CURRENT_POINTER) == "1.0.0"  # the candidate is never activated
    assert clear_shadow(releases.store, MODEL) and releases.store.pointer(MODEL, SHADOW_POINTER) is None
    model_file = releases.store.version_dir(MODEL, "2.0.0") / "model_cpu.tflite"
    model_file.chmod(0o644)
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    with pytest.raises(VerificationError):
        check_candidate(releases.store, MODEL, "2.0.0")


def test_a_candidate_below_the_version_floor_is_refused(releases) -> None:
    releases.install("0.9.0", activate=False)
    releases.install("1.0.0")
    with pytest.raises(StoreError, match="floor"):
        set_shadow(releases.store, MODEL, "0.9.0")


def test_the_agent_runs_the_candidate_beside_the_primary_and_never_acts_on_it(releases) -> None:
    releases.install("1.0.0")
    releases.store.install(releases.build("2.0.0", SHUFFLED_STAND_IN, "inat_bird_labels.txt"))
    set_shadow(releases.store, MODEL, "2.0.0")
    agent = Agent(load_config(releases.agent_config("swap:\n  watch_interval_s: 0.1\nstatus:\n  interval_s: 0.2\n"
                                                    "telemetry:\n  mode: summary\n  summary_interval_s: 0.5\n"
                                                    "shadow:\n  share: 0.5\n  report_interval_s: 0.2\n")))
    report_path = releases.root / SHADOW_REPORT_FILE

    def report() -> ShadowReport | None:
        return ShadowReport.model_validate(json.loads(report_path.read_text())) if report_path.is_file() else None

    with running(agent):
        wait_until(lambda: (r := report()) is not None and r.summary is not None and r.summary.frames >= 12,
                   "12 shadow frames in the report")
    final = report()
    assert (final.candidate, final.primary) == ("2.0.0", "1.0.0")
    assert (final.boot.boot_id if final.boot else None) == read_boot_id()  # aged on the boot clock (issue 24)
    assert final.summary.top1_agree < final.summary.frames - final.summary.errors  # it answers differently
    status = read_status(releases.root / "status.json")
    assert status.version == "1.0.0" and status.swaps == 0  # never acted on
    assert releases.store.pointer(MODEL, CURRENT_POINTER) == "1.0.0"
    shadows = [m.inference.shadow for m in sink_messages(releases) if m.inference and m.inference.shadow]
    assert shadows and {s.model.version for s in shadows} == {"2.0.0"}
    assert sum(s.frames for s in shadows) <= final.summary.frames


def test_the_shadow_command_names_shows_and_clears_the_candidate(releases) -> None:
    from typer.testing import CliRunner

    from edgefleet.device.cli import app

    releases.install("1.0.0")
    releases.install("2.0.0", activate=False)
    runner = CliRunner()

    def shadow(*args: str):  # noqa: ANN202
        return runner.invoke(app, ["shadow", MODEL, *args, "--root", str(releases.root), "--json"])

    named = shadow("2.0.0")
    assert named.exit_code == 0 and json.loads(named.stdout)["shadow"] == "2.0.0"
    shown = shadow()
    assert json.loads(shown.stdout) == {"model": MODEL, "shadow": "2.0.0", "report": None, "report_age_s": None,
                                        "report_age_clock": None, "report_age_note": None}  # no agent ran yet
    both = shadow("2.0.0", "--clear")
    assert both.exit_code == 2 and releases.store.pointer(MODEL, SHADOW_POINTER) == "2.0.0"  # nothing changed
    missing = shadow("9.9.9")
    assert missing.exit_code == 2 and releases.store.pointer(MODEL, SHADOW_POINTER) == "2.0.0"
    cleared = shadow("--clear")
    assert cleared.exit_code == 0 and json.loads(cleared.stdout)["cleared"] is True
    assert releases.store.pointer(MODEL, SHADOW_POINTER) is None


def test_naming_a_candidate_on_an_agent_that_runs_no_shadow_is_refused_naming_the_setting(releases) -> None:
    """Without this a rollout's shadow wave names the candidate, then waits for pairs the agent never makes
    until the wave's timeout."""
    import yaml
    from typer.testing import CliRunner

    from edgefleet.device.cli import app

    releases.install("1.0.0")
    releases.install("2.0.0", activate=False)
    config = releases.root / "agent.yaml"
    config.write_text(yaml.safe_dump({"device_id": "cam-1", "model": MODEL, "root": str(releases.root),
                                      "shadow": {"share": 0}}))
    refused = CliRunner().invoke(app, ["shadow", MODEL, "2.0.0", "--config", str(config)])
    assert refused.exit_code == 2, refused.output
    assert "shadow.share is 0" in refused.output and "set shadow.share" in refused.output
    assert releases.store.pointer(MODEL, SHADOW_POINTER) is None  # nothing named
    config.write_text(yaml.safe_dump({"device_id": "cam-1", "model": MODEL, "root": str(releases.root),
                                      "shadow": {"share": 0.1}}))
    named = CliRunner().invoke(app, ["shadow", MODEL, "2.0.0", "--config", str(config)])
    assert named.exit_code == 0, named.output
    assert releases.store.pointer(MODEL, SHADOW_POINTER) == "2.0.0"


@pytest.mark.parametrize("score", [math.inf, -math.inf, math.nan, 1.5, -0.2])
def test_a_candidate_answering_non_finite_or_out_of_range_scores_is_counted_not_fatal(score: float) -> None:
    tally = ShadowTally(CANDIDATE)
    tally.add([result(1, 0.7)], 1.0, [result(1, score)], 1.0, detector=False)
    builder = TelemetryBuilder("summary", 10.0, sample_results=False, max_results=1, start_time=0.0,
                               shadow=tally.take_window)
    builder.add_inference(InferenceRecord(1.0, PRIMARY, 1.0, (result(1, 0.7),)))
    (draft,) = builder.tick(10.0)
    assert draft.inference.count == 1 and draft.inference.shadow.frames == 1


def test_a_failing_shadow_never_costs_the_primary_its_window() -> None:
    def broken(max_frames: int) -> None:
        raise RuntimeError("a bug in the shadow's bookkeeping")

    builder = TelemetryBuilder("summary", 10.0, sample_results=False, max_results=1, start_time=0.0, shadow=broken)
    builder.add_inference(InferenceRecord(1.0, PRIMARY, 1.0, (result(1, 0.7),)))
    (draft,) = builder.tick(10.0)
    assert draft.inference.count == 1 and draft.inference.shadow is None
    builder.add_inference(InferenceRecord(11.0, PRIMARY, 1.0, (result(1, 0.7),)))
    assert len(builder.tick(20.0)) == 1  # the next window closes too


def test_the_shadow_keeps_every_class_of_both_models() -> None:
    tally = ShadowTally(CANDIDATE)
    for class_id in range(100):  # 100 classes, each once: a cut to the top 32 would lose most of them
        tally.add([result(class_id, 0.7)], 1.0, [result(class_id, 0.6)], 1.0, detector=False)
    summary = tally.take_window(100)
    assert len(summary.primary.classes) == len(summary.candidate.classes) == 100


def test_a_share_too_small_to_sample_any_frame_is_refused_in_the_config(tmp_path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: cam-1\nmodel: {MODEL}\nroot: {tmp_path}\nshadow:\n  share: 0.00001\n")
    with pytest.raises(ConfigError, match="resolution"):
        load_config(path)


def test_the_shadow_command_says_how_old_the_report_is_by_the_devices_clock() -> None:
    # Review finding: the rollout judged a stopped agent's last cumulative pairs as if they were current.
    # Issue 24: a report (of an agent before the boot stamp) written ahead of the wall clock has no age, not 0.
    from datetime import datetime, timezone

    from edgefleet.device.agent.report_age import DeviceNow
    from edgefleet.device.cli.shadow_command import report_payload

    now = DeviceNow(wall=datetime(2026, 12, 7, 12, 0, 30, tzinfo=timezone.utc), monotonic_s=100.0, boot_id="b")
    assert report_payload({"updated_at": "2026-12-07T12:00:00.500000Z"}, now)["report_age_s"] == 29.5
    ahead = report_payload({"updated_at": "2026-12-07T12:01:00+00:00"}, now)
    assert ahead["report_age_s"] is None and ahead["report_age_note"].startswith("wall clock ahead")
    assert report_payload(None, now)["report_age_s"] is None
