"""``python -m services.analytics [--flags]``: every setting is a flag and an env variable."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import ValidationError

from services.analytics.settings import Settings
from services.common.logs import configure_logging
from services.common.settings import settings_from_args
from transtic.dependency_warnings import quiet_dependency_warnings


def main(argv: Sequence[str] | None = None) -> None:
    quiet_dependency_warnings()
    try:
        settings = settings_from_args(
            Settings,
            argv,
            prog="python -m services.analytics",
            description="TransTIC cloud analytics service (gRPC + REST + web page).",
        )
    except ValidationError as exc:
        # A configuration mistake deserves a list of problems, not a traceback.
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"invalid settings:\n{problems}")
    configure_logging(settings.log_level, settings.log_format)
    # Imported once logging is set up: torch and the model libraries warn while they load,
    # and a JSON log must carry those lines as JSON too.
    from services.analytics.server import run

    try:
        run(settings)
    except (OSError, ValueError) as exc:
        sys.exit(f"analytics service cannot start: {exc}")


if __name__ == "__main__":
    main()
