"""Make this folder's helper modules (grpc peers and helpers) importable
whatever pytest's import mode is."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
