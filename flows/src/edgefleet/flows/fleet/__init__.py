"""Fleet access: how every flow reaches hosts over SSH (rollout, deploy-agent, the release's compile host).

- `inventory`: `fleet.yaml` (devices, defaults, known_hosts), `DeviceSpec`, `load_inventory`.
- `hosts`: what every SSH host has (`SshHost`), a bastion (`GatewaySpec`), the compile host (`CompileHostSpec`).
- `known_hosts`: known_hosts read as OpenSSH does (@revoked honoured, clear errors).
- `connection`: the one way to connect (Fabric, host keys checked, timeouts everywhere): `HostConnection`
  (run / put / get / write_text) for any host, `DeviceConnection` (plus the device CLI) for devices.
- `shell`: shell text, pure (`remote_path`, the device CLI's command line).
- `agent`: agent operations on a device (probe, verify, activate, roll back).
- `steps`: step records (what ran on which host, and how it ended) and their table rows.
- `parallel`: one task per host, each given one typed job.
- `device_values`: the typed strings for every value that reaches a device.

It imports no flow: flows import it.
"""
