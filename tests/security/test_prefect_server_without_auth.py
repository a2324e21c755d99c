"""Issue 20 item 8: the local Prefect server (`edgefleet ui`, the sandbox, the demo) answered anyone who could
reach its port: any local user (or a web page, through the browser: CORS was `*` and CSRF protection off)
could start deploy-agent or a rollout with parameters of their choosing, which act as root on devices. The
server now requires an auth string (kept in `<PREFECT_HOME>/api-auth-string`, mode 0600), has CSRF protection
on and admits only its own UI as a CORS origin; the stack's own clients send the string.

A real `prefect server start` (LocalPrefectUi.start_server), on a free port and a temporary home."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.local.ui import LocalPrefectUi, UiSettings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrefectUi]:
    home = tmp_path_factory.mktemp("prefect-auth")
    stack = LocalPrefectUi(UiSettings(project_dir=REPO, prefect_home=home, port=0, run_schedules=False))
    stack.start_server()  # the server alone (`with stack` would start the worker and deployments too)
    try:
        yield stack
    finally:
        stack.stop()


def _request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
             body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_api_refuses_a_caller_without_the_auth_string(server):
    wrong = base64.b64encode(b"guess").decode()
    for headers in ({}, {"Authorization": f"Basic {wrong}"}):
        assert _request(f"{server.api_url}/admin/version", headers=headers)[0] == 401
        status, _, _ = _request(f"{server.api_url}/deployments/filter", method="POST", body=b"{}",
                                headers={"Content-Type": "application/json", **headers})
        assert status in (401, 403)  # refused: no auth string (401) or no CSRF token (403)
    right = base64.b64encode(server.auth_string.encode()).decode()
    assert _request(f"{server.api_url}/admin/version", headers={"Authorization": f"Basic {right}"})[0] == 200


def test_the_stacks_own_clients_get_in(server):
    with server.client() as client:
        assert client.read_deployments() == []
    assert server.env["PREFECT_API_AUTH_STRING"] == server.auth_string
    assert server.settings.auth_string_file.stat().st_mode & 0o077 == 0


def test_csrf_is_on_and_the_ui_asks_for_the_auth_string(server):
    status, _, body = _request(f"{server.ui_url}/ui-settings")
    settings = json.loads(body)
    assert status == 200 and settings["csrf_enabled"] is True and settings["auth"] == "BASIC"


def test_cors_admits_only_the_servers_own_ui(server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    _, foreign, _ = _request(f"{server.api_url}/deployments/filter", method="OPTIONS",
                             headers={"Origin": "http://evil.example", **preflight})
    assert foreign.get("access-control-allow-origin") not in ("*", "http://evil.example")
    _, own, _ = _request(f"{server.api_url}/deployments/filter", method="OPTIONS",
                         headers={"Origin": server.ui_url, **preflight})
    assert own.get("access-control-allow-origin") == server.ui_url
