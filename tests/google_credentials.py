"""A host as strict as a fresh device about Google credentials, and credentials files like the real ones.

`without_google_credentials` removes every ambient source Application Default Credentials would find (the
environment variable, gcloud's configuration, the GCE metadata server, the emulators), so Google's own clients
refuse with `DefaultCredentialsError` exactly as on a device nothing was provisioned on, whatever the test
machine has. `service_account_file` writes a real service-account key file (a fresh RSA key) whose `token_uri`
may point at a local token endpoint (`TokenEndpoint`), so a client that uses the file is seen using it.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

AMBIENT = ("GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST",
           "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT")


def without_google_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Application Default Credentials anywhere for this process and the processes it starts."""
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "gcloud-config-empty"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(empty))
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google-auth: no metadata server (a device is not on GCE)


def service_account_file(path: Path, *, email: str = "device-cam-1@edgefleet-test.iam.gserviceaccount.com",
                         token_uri: str = "https://oauth2.googleapis.com/token") -> Path:
    """A service-account key file (what `gcloud iam service-accounts keys create` writes), with a fresh key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "edgefleet-test", "private_key_id": "0" * 40,
        "private_key": pem, "client_email": email, "client_id": "1" * 21, "token_uri": token_uri}))
    return path


class TokenEndpoint:
    """A local OAuth 2.0 token endpoint: grants every JWT-bearer assertion a token and records who asked."""

    def __init__(self) -> None:
        self.grants: list[str] = []  # the assertions' issuers (the service account emails)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                assertion = urllib.parse.parse_qs(body).get("assertion", [""])[0]
                endpoint.grants.append(_jwt_issuer(assertion))
                reply = json.dumps({"access_token": "token-for-test", "expires_in": 3600,
                                    "token_type": "Bearer"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _jwt_issuer(assertion: str) -> str:
    import base64

    try:
        payload = assertion.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"]
    except (IndexError, ValueError, KeyError):
        return ""
