"""The settings a flow runs with: PERSONA_SYNC_* variables from the worker's environment (or `.env`), and
the secrets that PERSONA_SYNC_SECRET_BLOCKS names read from Prefect Secret blocks, so a deployment's
credentials can live in the Prefect server's blocks instead of the worker's environment. Never in
`prefect.yaml`.
"""

from __future__ import annotations

from core.errors import ConfigurationError
from core.settings import Settings, load_settings


def flow_settings() -> Settings:
    """The settings, with each secret PERSONA_SYNC_SECRET_BLOCKS names loaded from its Secret block."""
    settings = load_settings()
    if not settings.secret_blocks:
        return settings
    from prefect.blocks.system import Secret

    values: dict[str, object] = {}
    for setting, block in settings.secret_blocks.items():
        try:
            values[setting] = Secret.load(block).get()
        except ValueError as error:
            raise ConfigurationError(
                f"the Prefect Secret block {block!r} (for {setting}, PERSONA_SYNC_SECRET_BLOCKS) cannot be loaded: "
                f"{error}. Create it in the Prefect UI (Blocks) or with `Secret(value=...).save({block!r})`") from error
    return settings.updated(**values)
