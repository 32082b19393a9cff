"""Registries: the signed index, sources by URL scheme, publishing, and the pull loop."""
