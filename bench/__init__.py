"""Benchmarks of the relaydesk core (``python -m bench.relay``; see docs/benchmarks.md)."""
