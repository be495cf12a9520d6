"""Parley benchmark harness: load generator, reference targets, scenarios."""
