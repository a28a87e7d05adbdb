"""Warning filters for the programs' entry points, never for the library.

Importing CompressAI imports torch_geometric where it is installed, whose import-time
``torch.jit.script`` calls print a deprecation warning on every start: nothing a user of
``transtic`` or of the services can act on. The entry points (``transtic``, ``python -m
services.analytics``, ``python -m services.encoder``) call :func:`quiet_dependency_warnings`
first; code that imports the library keeps its own warning filters.
"""

from __future__ import annotations

import warnings


def quiet_dependency_warnings() -> None:
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )
