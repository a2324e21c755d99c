"""The agent's unit as each supported systemd reads it (issue 22, item 7): Debian 11 / Raspberry Pi OS Bullseye
run systemd 247, which does not know `PrivateIPC=` (248) and reported it for the unit deploy-agent installed.

The check is the real part: bullseye's own `systemd-analyze` (its Debian package, unpacked by
`.ci/debian-systemd`) beside the machine's (bookworm: 252). A unit rendered for a version must verify clean
with that version's systemd-analyze; the unit as written (for the newest systemd) must not, on 247.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgefleet.flows.deploy_agent.device_access import device_access
from edgefleet.flows.deploy_agent.service import ServiceSpec, render_unit
from edgefleet.flows.deploy_agent.unit_compat import (
    DIRECTIVE_SINCE,
    OLDEST_SYSTEMD,
    fit_unit,
    parse_systemd_version,
)
from edgefleet.kernel.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
PREPARE_TIMEOUT_S = 600  # a first run downloads bullseye's package lists and its systemd package


def _spec(kind: str = "images") -> ServiceSpec:
    return ServiceSpec(command=("/bin/sleep", "60"), state_dir="/var/lib/edgefleet-agent", user="edgefleet",
                       device_classes=device_access(kind).device_classes)


@pytest.fixture(scope="module")
def bullseye_analyze() -> str:
    """Debian 11's systemd-analyze (systemd 247), prepared by .ci/debian-systemd (cached in .cache/systemd)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("bullseye's systemd-analyze comes from its Debian package: needs apt-get and dpkg-deb")
    prepared = subprocess.run(["bash", str(REPO / ".ci" / "debian-systemd"), "bullseye"], capture_output=True,
                              text=True, timeout=PREPARE_TIMEOUT_S, check=False)
    assert prepared.returncode == 0, prepared.stderr
    return prepared.stdout.strip().splitlines()[-1]


def _analyzers(bullseye: str) -> list[str]:
    host = shutil.which("systemd-analyze")
    return [bullseye] + ([host] if host else [])


def _version(analyze: str) -> int:
    return parse_systemd_version(subprocess.run([analyze, "--version"], capture_output=True, text=True,
                                                check=True).stdout)


def _complaints(analyze: str, text: str, directory: Path) -> list[str]:
    """What `systemd-analyze verify` says about the unit itself (other units' noise left out)."""
    unit = directory / "edgefleet-agent.service"
    unit.write_text(text)
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SYSTEMD_LOG_COLOR": "0"}, check=False)
    lines = [line for line in (verified.stdout + verified.stderr).splitlines() if str(unit) in line]
    return lines + ([f"exit {verified.returncode}"] if verified.returncode else [])


def test_bullseyes_systemd_reports_the_unit_as_written_for_the_newest(bullseye_analyze, tmp_path):
    assert _version(bullseye_analyze) == 247

    complaints = _complaints(bullseye_analyze, render_unit(_spec()), tmp_path)

    assert any("PrivateIPC" in line for line in complaints), complaints


@pytest.mark.parametrize("kind", ["images", "camera"])
def test_the_unit_rendered_for_each_systemd_verifies_clean_with_it(bullseye_analyze, tmp_path, kind):
    analyzers = _analyzers(bullseye_analyze)
    for analyze in analyzers:
        version = _version(analyze)
        fitted = fit_unit(render_unit(_spec(kind)), version)

        assert _complaints(analyze, fitted.text, tmp_path) == [], f"systemd {version}"
        assert ("PrivateIPC" in fitted.omitted) == (version < DIRECTIVE_SINCE["PrivateIPC"])
        assert "ProtectProc=invisible\n" in fitted.text  # 247 has it: kept
        assert "RuntimeDirectory=edgefleet-agent\nRuntimeDirectoryMode=0755\nRuntimeDirectoryPreserve=yes\n" \
            in fitted.text  # status.json on /run (issue 24): verified clean above on 247 and the host's
    assert {_version(analyze) for analyze in analyzers} >= {247}


def test_a_directive_is_left_out_exactly_below_its_first_version():
    text = render_unit(_spec())

    for directive, since in DIRECTIVE_SINCE.items():
        if f"\n{directive}=" not in text:
            continue
        assert f"\n{directive}=" in fit_unit(text, since).text
        older = fit_unit(text, since - 1)
        assert f"\n{directive}=" not in older.text and directive in older.omitted
    assert fit_unit(text, 252).omitted == () and fit_unit(text, None).text == text


def test_a_systemd_older_than_supported_is_refused_with_the_way_out():
    with pytest.raises(ConfigError) as refused:
        fit_unit(render_unit(_spec()), OLDEST_SYSTEMD - 1)

    assert "systemd 240" in refused.value.message and "manager: process" in refused.value.fix


def test_the_version_is_read_from_systemctl_output():
    assert parse_systemd_version("systemd 247 (247.3-7+deb11u5)\n+PAM +AUDIT\n") == 247
    assert parse_systemd_version("systemd 252 (252.39-1~deb12u2)\n") == 252
    with pytest.raises(ConfigError, match="systemd version"):
        parse_systemd_version("bash: systemctl: command not found")


def test_every_versioned_directive_is_one_the_template_may_use():
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", name) and since > OLDEST_SYSTEMD
               for name, since in DIRECTIVE_SINCE.items())


def test_the_unit_waits_for_ready_restarts_a_silent_agent_and_starts_after_time_sync():
    spec = _spec().model_copy(update={"watchdog_s": 45.0, "start_timeout_s": 240.0})
    text = fit_unit(render_unit(spec), 247).text  # kept on the oldest systemd too

    assert "Type=notify\n" in text and "NotifyAccess=main\n" in text
    assert "WatchdogSec=45\n" in text and "TimeoutStartSec=240\n" in text and "Restart=on-failure\n" in text
    after = next(line for line in text.splitlines() if line.startswith("After="))
    assert "time-sync.target" in after.split("=", 1)[1].split()
    assert not any(line.startswith("Wants=") and "time-sync.target" in line for line in text.splitlines())


def test_the_runtime_directory_is_the_services_own_and_kept_on_the_oldest_systemd():
    spec = _spec().model_copy(update={"name": "edgefleet-agent-cam2"})

    fitted = fit_unit(render_unit(spec), OLDEST_SYSTEMD)  # $RUNTIME_DIRECTORY: 240; Preserve: 235

    assert "RuntimeDirectory=edgefleet-agent-cam2\n" in fitted.text  # two agents on a device: two directories
    assert not {"RuntimeDirectory", "RuntimeDirectoryMode", "RuntimeDirectoryPreserve"} & set(fitted.omitted)


@pytest.mark.parametrize("name", [".", ".."])
def test_a_service_name_that_is_no_directory_name_is_refused(name):
    with pytest.raises(ConfigError, match="service name"):
        render_unit(_spec().model_copy(update={"name": name}))
