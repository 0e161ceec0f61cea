"""Connection strings as drills show and journal them: see ``drctl.engine.conninfo``.

The parser lives in the engine layer because the one Redactor needs it too (a client
library's error text may quote any piece of a DSN); the drill modules import it here.
"""

from drctl.engine.conninfo import mask_dsn, secret_values

__all__ = ["mask_dsn", "secret_values"]
