"""Which Prefect work pool, and so which Google identity, runs each deployment (issue 22, item 4).

A process worker's flow runs inherit the worker's environment, so a worker started with one identity's
Application Default Credentials runs every flow of its pool as that identity, and the least-privilege service
accounts are each used by the code they were made for. Pools also keep the two signing keys apart: the release
key (release-model, rollout, resign-channels, promote-canary: `signing`) and the fleet enrolment key
(deploy-agent: `enrolment`) are never read by flows of the same pool, so no worker (nor the machine, the key
files and the Secret block access it is given) holds both. deploy-agent's pool, `edgefleet-enrol`, runs as the
pipeline identity: the grants it needs (write `fleet/devices/` and `fleet/revoked/` records in the registry
bucket) are the pipeline account's. `prefect.yaml` maps each deployment to its pool
(tests/infra/test_pools.py keeps the two in step); `edgefleet config from-stack` writes `work-pools.yaml`
with each pool's service account and the commands that start its worker as it.

No Pulumi import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgefleet.infra.names import MONITOR_ACCOUNT_ROLE, PIPELINE_ACCOUNT_ROLE

PIPELINE_POOL = "edgefleet-pipeline"  # the release key's flows
ENROL_POOL = "edgefleet-enrol"  # the fleet enrolment key's flow
MONITOR_POOL = "edgefleet-monitor"
# work pool -> the identity its worker runs as.
POOL_IDENTITY: Mapping[str, str] = {
    PIPELINE_POOL: PIPELINE_ACCOUNT_ROLE,
    ENROL_POOL: PIPELINE_ACCOUNT_ROLE,
    MONITOR_POOL: MONITOR_ACCOUNT_ROLE,
}
# prefect.yaml deployment -> its work pool.
DEPLOYMENT_POOL: Mapping[str, str] = {
    "release-model": PIPELINE_POOL,  # writes versions, moves channels (release key)
    "rollout": PIPELINE_POOL,  # reads the registry, writes its rollout record, promotes (release key)
    "pull-rollout": PIPELINE_POOL,  # signs staged shares of a channel, writes its rollout record (release key)
    "resign-channels": PIPELINE_POOL,  # re-signs channel pointers (release key)
    "promote-canary": PIPELINE_POOL,  # moves the stable channel (release key)
    "deploy-agent": ENROL_POOL,  # writes each device's key record, fleet/devices/ (enrolment key)
    "fleet-monitor": MONITOR_POOL,  # consumes telemetry, reads device keys, writes metrics
    "fleet-overview": MONITOR_POOL,  # reads the fleet state the monitor keeps
}
# prefect.yaml deployment -> the identity whose grants its code needs (tests/infra/test_policy_iam_conformance.py
# records those calls per identity).
DEPLOYMENT_IDENTITY: Mapping[str, str] = {name: POOL_IDENTITY[pool] for name, pool in DEPLOYMENT_POOL.items()}
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
    for pool, identity in POOL_IDENTITY.items():
        email = service_accounts[identity]
        credentials = adc_file(identity)
        pools[pool] = {
            "identity": identity,
            "service_account": email,
            "deployments": sorted(name for name, where in DEPLOYMENT_POOL.items() if where == pool),
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
