"""One gate (issue 21): the liveness check, the canary judge and the promotion read one set of thresholds;
parameters written before it still load, with a warning naming the new key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgefleet.flows.rollout.params import CanaryGate, PromotionParams, RolloutParams

ROLLOUT = {"inventory": "fleet.yaml", "registry": "registry", "model": "mobilenet", "version": "1.0.0",
           "public_key": "release.pub"}
PROMOTION = {"inventory": "fleet.yaml", "registry": "registry", "model": "mobilenet", "monitor_config": "m.yaml"}


def test_the_liveness_check_reads_the_gates_thresholds() -> None:
    params = RolloutParams.model_validate({**ROLLOUT, "health": {"timeout_s": 30},
                                           "canary": {"min_live_inferences": 12, "max_swap_failures": 1}})
    live = params.liveness
    assert (live.min_live_inferences, live.max_swap_failures, live.timeout_s) == (12, 1, 30)
    assert "min_inferences" not in RolloutParams.model_json_schema()["$defs"]["HealthGate"]["properties"]


def test_old_health_keys_are_read_into_the_gate_with_a_warning() -> None:
    with pytest.warns(FutureWarning) as warned:
        params = RolloutParams.model_validate({**ROLLOUT, "health": {"min_inferences": 7, "max_swap_failures": 2,
                                                                     "timeout_s": 30},
                                               "canary": {"min_samples": 50}})
    assert sorted(str(w.message).split(":")[0] for w in warned) == [
        "parameter health.max_swap_failures is deprecated", "parameter health.min_inferences is deprecated"]
    assert "read as canary.min_live_inferences" in " ".join(str(w.message) for w in warned)
    assert params.canary == CanaryGate(min_live_inferences=7, max_swap_failures=2, min_samples=50)
    assert params.liveness.min_live_inferences == 7 and params.health.timeout_s == 30


def test_an_old_key_contradicting_its_new_one_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"health\.max_swap_failures \(2\) and canary\.max_swap_failures \(0\)"):
        RolloutParams.model_validate({**ROLLOUT, "health": {"max_swap_failures": 2},
                                      "canary": {"max_swap_failures": 0}})


def test_the_promotions_old_min_inferences_is_the_gates() -> None:
    with pytest.warns(FutureWarning, match=r"judge\.min_promotion_inferences"):
        params = PromotionParams.model_validate({**PROMOTION, "min_inferences": 40, "judge": {"alpha": 0.02}})
    assert params.judge == CanaryGate(min_promotion_inferences=40, alpha=0.02)
    assert PromotionParams.model_validate({**PROMOTION, "judge": {"min_promotion_inferences": 40}}).judge == \
        params.judge.model_copy(update={"alpha": 0.01})


def test_the_shadow_wave_is_judged_with_the_gates_thresholds() -> None:
    # issue 25 review: the shadow judge has no thresholds of its own; its section only says when and how long
    params = RolloutParams.model_validate({**ROLLOUT, "shadow": {"enabled": True},
                                           "canary": {"min_shadow_agreement": 0.95, "min_samples": 40}})
    assert params.canary.min_shadow_agreement == 0.95 and params.shadow.enabled
    with pytest.raises(ValidationError, match="min_agreement"):
        RolloutParams.model_validate({**ROLLOUT, "shadow": {"enabled": True, "min_agreement": 0.95}})
