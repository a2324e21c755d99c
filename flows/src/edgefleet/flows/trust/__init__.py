"""The pipelines' sign side: private key sources (`keysource`, `release_key`), signing and re-signing channel
pointers (`pointer_signing`, `resign_channels`, `convert_unsigned`), release key rotation (`key_rotation`,
`agent_key_rotation`), device key records and enrolment tokens (`device_key_records`, `enrolment_tokens`), and a
pointer read back from the registry judged before use (`pointer_readback`).

What a device verifies is `edgefleet.device.trust` / `edgefleet.kernel.trust`; the registry only stores bytes.
"""
