"""Contracts the device shares with the pipelines and the infrastructure.

`flows/` and `infra/` import these; nothing here imports from them.
"""
