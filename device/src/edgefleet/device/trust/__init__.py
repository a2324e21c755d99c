"""The device's verify side: channel pointer rules (`pointers`), signed version bundles (`version_bundle`), agent
release signatures (`agent_signatures`), the trust anchor check (`anchor`) and the device's own telemetry identity
(`device_identity`). The monitor checks telemetry with `device_identity` too.

The pipelines' sign side is `edgefleet.flows.trust`; the primitives are `edgefleet.kernel.trust`.
"""
