"""Developer command: `python -m connectors.state revision "what it does"` writes the next alembic revision."""

from __future__ import annotations

import sys

from connectors.state.schema import write_revision

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "revision":
        sys.exit('usage: python -m connectors.state revision "what the revision does"')
    print(write_revision(sys.argv[2]))
