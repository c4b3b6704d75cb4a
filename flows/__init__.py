"""Prefect flows: what an operator runs (nightly sync; backfills and more as they come)."""
