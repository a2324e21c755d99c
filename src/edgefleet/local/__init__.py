"""The local stack: the official emulators and the local twin of the cloud resources."""
