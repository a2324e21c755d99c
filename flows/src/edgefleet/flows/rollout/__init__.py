"""Fleet rollout over SSH: inventory, connections, per-device steps, the `rollout` and `promote-canary` flows.

- `edgefleet.flows.fleet.inventory`: `fleet.yaml` (devices, defaults, known_hosts), `load_inventory`.
- `edgefleet.flows.fleet.connection`: Fabric connections that verify host keys (RejectPolicy) and never hang.
- `edgefleet.flows.rollout.device`: what one device goes through (preflight, upload, verify, activate,
  health, rollback), as plain functions taking the connection first.
- `edgefleet.flows.rollout.flow`: the `rollout` flow (waves, failure threshold, rollback policy, record).
- `edgefleet.flows.rollout.promote`: the scheduled `promote-canary` flow.
"""
