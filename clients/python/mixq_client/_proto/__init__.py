"""Stubs generated from proto/mixq.proto when the package is built (setup.py)."""
