"""`python -m persona_sync` is the `persona-sync` command."""

from persona_sync.cli import app

app(prog_name="persona-sync")
