"""The `deploy-agent` flow: install the edgefleet device agent on devices over SSH and run it as a service."""
