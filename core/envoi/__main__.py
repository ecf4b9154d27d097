"""``python -m envoi``: the same as the ``envoi`` command."""

import sys

from envoi.cli import main

sys.exit(main())
