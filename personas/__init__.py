"""Personas: behaviour features, the catalog schema, the rule engine and evaluation (no Prefect here)."""
