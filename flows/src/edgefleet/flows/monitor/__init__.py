"""The fleet monitor as a Prefect deployment (`fleet-monitor` in prefect.yaml)."""
