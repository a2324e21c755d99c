"""An X.509 workload-identity credential file exchanges the device's certificate with STS when it is loaded: a
device that cannot reach STS (or whose certificate is refused) gets a failed `credentials` check naming the file
and the fix, not a traceback that stops `doctor` and every rollout preflight."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefleet.device.credentials import CredentialsError, load_device_credentials


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed once we leave: connection refused


def _x509_credentials(directory: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sim-1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (directory / "device.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "device.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    certificate_config = directory / "certificate_config.json"
    certificate_config.write_text(json.dumps({"cert_configs": {"workload": {
        "cert_path": str(directory / "device.pem"), "key_path": str(directory / "device.key")}}}))
    sts = f"https://127.0.0.1:{_closed_port()}/v1"
    credentials = directory / "credentials.json"
    credentials.write_text(json.dumps({
        "universe_domain": "googleapis.com", "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/fleet/providers/x509",
        "subject_token_type": "urn:ietf:params:oauth:token-type:mtls",
        "token_url": f"{sts}/token", "token_info_url": f"{sts}/introspect",
        "credential_source": {"certificate": {"certificate_config_location": str(certificate_config)}},
    }))
    return credentials


def test_an_x509_federation_that_cannot_reach_sts_is_a_credentials_error_naming_the_file_and_fix(tmp_path):
    credentials = _x509_credentials(tmp_path)
    with pytest.raises(CredentialsError) as raised:
        load_device_credentials(credentials)
    assert str(credentials) in raised.value.message and "token exchange failed" in raised.value.message
    assert "sts.mtls.googleapis.com" in raised.value.fix and "fleet CA" in raised.value.fix
