"""Fleet rollout over SSH: per-device steps, the `rollout` and `promote-canary` flows.

Devices are reached through the fleet package (`edgefleet.flows.fleet`: the inventory, the one verified
connection, agent operations, step records).

- `edgefleet.flows.rollout.device`: what one device goes through (preflight, upload, health), as plain
  functions taking the connection first; verify, activate and rollback are `edgefleet.flows.fleet.agent`'s.
- `edgefleet.flows.rollout.flow`: the `rollout` flow (waves, failure threshold, rollback policy, record).
- `edgefleet.flows.rollout.promote`: the scheduled `promote-canary` flow.
"""
