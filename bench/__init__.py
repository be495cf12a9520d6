"""Parley benchmark harness (issue 9): load generator, reference targets, scenarios."""
