"""The spot check in the running agent, on a real model: sampled frames reach the registry with the answers the
model gave, while the loop goes on inferring."""

from __future__ import annotations

import json

import pytest

from edgefleet.device.agent.config import load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.trust.device_identity import DEVICE_PUBLIC_KEY_FILE, spot_sample_signature_problem
from edgefleet.kernel.contracts.spotcheck import SpotSample
from edgefleet.kernel.trust.signatures import load_public_key
from tests.device.agent.test_loop import MODEL, running, wait_until


@pytest.mark.slow
def test_the_running_agent_sends_its_sample_with_the_models_answers(releases) -> None:
    releases.install("1.0.0", "mobilenet_v2_1.0_224_quant.tflite")
    registry = releases.tmp / "spot-registry"
    config = releases.tmp / "agent.yaml"
    config.write_text(f"device_id: cam-1\nmodel: {MODEL}\nroot: {releases.root}\n"
                      f"source:\n  kind: images\n  path: {releases.images()}\n"
                      f"spot_check:\n  enabled: true\n  share: 0.5\n  registry: {registry}\n"
                      "  upload_interval_s: 0.2\n")
    agent = Agent(load_config(config))
    folder = registry / "spotcheck" / "cam-1"
    with running(agent):
        wait_until(lambda: len(list(folder.glob("*.json"))) >= 4, "four samples uploaded")
        frames_then = agent.stats.frames
        wait_until(lambda: agent.stats.frames > frames_then + 10, "the loop inferring on")
    samples = [SpotSample.model_validate(json.loads(path.read_text())) for path in sorted(folder.glob("*.json"))]
    assert all(s.model == MODEL and s.model_version == "1.0.0" and s.share == 0.5 for s in samples)
    assert {s.answer_label for s in samples} & {"Egyptian cat", "macaw", "military uniform"}  # Coral's answers
    assert all(s.answer_label for s in samples) and all((folder / f"{s.frame_id}.jpg").exists() for s in samples)
    assert agent.spot_check is not None and agent.spot_check.sampled >= len(samples)
    device_key = load_public_key(releases.root / DEVICE_PUBLIC_KEY_FILE)  # the identity key telemetry signs with
    assert [spot_sample_signature_problem(device_key, s) for s in samples] == [None] * len(samples)
