"""The trust primitives every device carries: Ed25519 keys and signatures (`signatures`), the release keyring
(`release_keyring`). Like all of the kernel, it imports nothing of the project but the kernel.

The verify rules built on them are `edgefleet.device.trust`; the pipelines' sign side is `edgefleet.flows.trust`.
"""
