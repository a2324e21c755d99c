"""prefect.yaml: the release-model deployment points at the real flow with parameters it accepts."""

from __future__ import annotations

from pathlib import Path

import yaml

from edgefleet.flows.release.params import ReleaseParams

REPO = Path(__file__).resolve().parents[3]


def _deployment() -> dict:
    document = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = [d for d in document["deployments"] if d["name"] == "release-model"]
    return deployment


def test_deployment_entrypoint_loads_the_release_flow() -> None:
    from prefect.flows import load_flow_from_entrypoint

    deployment = _deployment()
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert flow.name == "release-model"
    assert deployment["work_pool"]["name"]


def test_deployment_parameters_are_valid_release_params() -> None:
    params = ReleaseParams.model_validate(_deployment()["parameters"]["params"])
    assert params.model == "shapes" and params.dataset.is_demo


def test_parameter_schema_is_a_nested_form() -> None:
    from prefect.utilities.callables import parameter_schema

    from edgefleet.flows.release.flow import release_model

    schema = parameter_schema(release_model.fn).model_dump_for_openapi()
    assert schema["required"] == ["params"]
    definitions = schema["definitions"]
    assert {"ReleaseParams", "TrainingParams", "GateParams", "CompileLocal", "CompileSsh", "CompileOff"} <= set(
        definitions)
    assert "min_tpu_fraction" in definitions["GateParams"]["properties"]


def test_no_secret_in_the_deployment() -> None:
    text = (REPO / "prefect.yaml").read_text().lower()
    assert "private key-----" not in text and "begin" not in text


def test_example_release_config_is_valid() -> None:
    from edgefleet.flows.release.params import load_params

    params = load_params(REPO / "flows/src/edgefleet/flows" / "release" / "release.example.yaml")
    assert params.model == "shapes" and params.version is None and params.channel == "canary"


def test_compile_sections_pass_prefects_parameter_check() -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from edgefleet.flows.release.flow import release_model

    schema = parameter_schema(release_model.fn).model_dump_for_openapi()
    for compile_section in ({"mode": "local", "compiler": "c"}, {"compiler": "c"}, {"mode": "off"},
                            {"mode": "ssh", "host": "builder"}):
        validate({"params": {"model": "birds", "compile": compile_section}}, schema, raise_on_error=True)
