"""The bottom layer: configuration and errors. Everything else may import it; it imports nothing of ours.

- `core.settings`: the one settings object (PERSONA_SYNC_* variables) and the typed configs it builds;
- `core.configs`: those configs, one per connector or stage (secrets as secret types);
- `core.errors`: the project's exception types, each with a message a data engineer can act on.
"""
