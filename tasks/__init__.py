"""Prefect tasks and the pure functions under them: pull, features, assignment, validation, push."""
