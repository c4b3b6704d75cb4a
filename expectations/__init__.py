"""The checks every run passes before it may write: Great Expectations suites as code, and guardrails.

- `suites.py`: the expectation suites of each stage (staged objects, catalog field coverage, features,
  assignments), built from plain values;
- `runner.py`: runs a suite with Great Expectations over one or more DataFrames (chunks) and writes the
  Data Docs;
- `guardrails.py`: limits on how much one run may change, with warn and fail levels;
- `checks.py`: what a check found (`Check`), and the messages and reports made of it.

This package knows neither Salesforce nor the state database: tasks/validation.py gathers the frames
and the limits, runs the suites and records the outcome.
"""
