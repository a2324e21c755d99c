"""Which Prefect work pool, and so which Google identity, runs each deployment (issue 22, item 4).

One pool per identity: a process worker's flow runs inherit the worker's environment, so a worker started with
one identity's Application Default Credentials runs every flow of its pool as that identity, and the
least-privilege service accounts are each used by the code they were made for. `prefect.yaml` maps each
deployment to its pool (tests/infra/test_work_pools.py keeps the two in step); `edgefleet config from-stack`
writes `work-pools.yaml` with each pool's service account and the commands that start its worker as it.

No Pulumi import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgefleet.infra.names import MONITOR_ACCOUNT_ROLE, PIPELINE_ACCOUNT_ROLE

WORK_POOLS: Mapping[str, str] = {
    PIPELINE_ACCOUNT_ROLE: "edgefleet-pipeline",
    MONITOR_ACCOUNT_ROLE: "edgefleet-monitor",
}
# prefect.yaml deployment -> the identity whose grants its code needs (tests/infra/test_iam_conformance.py
# records those calls per identity).
DEPLOYMENT_IDENTITY: Mapping[str, str] = {
    "release-model": PIPELINE_ACCOUNT_ROLE,  # writes versions, moves channels
    "rollout": PIPELINE_ACCOUNT_ROLE,  # reads the registry, writes its rollout record, promotes
    "resign-channels": PIPELINE_ACCOUNT_ROLE,  # re-signs channel pointers
    "promote-canary": PIPELINE_ACCOUNT_ROLE,  # moves the stable channel
    "deploy-agent": PIPELINE_ACCOUNT_ROLE,  # writes each device's key record (fleet/devices/)
    "fleet-monitor": MONITOR_ACCOUNT_ROLE,  # consumes telemetry, reads device keys, writes metrics
    "fleet-overview": MONITOR_ACCOUNT_ROLE,  # reads the fleet state the monitor keeps
}
ADC_DIRECTORY = "~/.config/edgefleet/adc"


def adc_file(identity: str) -> str:
    """Where the identity's Application Default Credentials (impersonating its service account) are kept."""
    return f"{ADC_DIRECTORY}/{identity}.json"


def work_pool_setup(service_accounts: Mapping[str, str]) -> dict[str, Any]:
    """Each pool: its identity, service account, deployments, and how to start its worker as that account.

    Args:
        service_accounts: identity (`pipeline`) -> service account email, from the stack outputs.
    """
    pools: dict[str, Any] = {}
    for identity, pool in WORK_POOLS.items():
        email = service_accounts[identity]
        credentials = adc_file(identity)
        pools[pool] = {
            "identity": identity,
            "service_account": email,
            "deployments": sorted(name for name, who in DEPLOYMENT_IDENTITY.items() if who == identity),
            "setup": [
                f"prefect work-pool create {pool} --type process",
                # Your login, impersonating the account (you need roles/iam.serviceAccountTokenCreator on it);
                # on a VM or Cloud Run job running as the account itself, skip this and the variable below.
                f"gcloud auth application-default login --impersonate-service-account {email}",
                f"mkdir -p {ADC_DIRECTORY} && mv ~/.config/gcloud/application_default_credentials.json {credentials}",
                f"GOOGLE_APPLICATION_CREDENTIALS={credentials} prefect worker start --pool {pool}",
            ],
        }
    return pools
