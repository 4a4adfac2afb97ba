"""``python -m openlookout``: the same as the ``openlookout`` command."""

import sys

from .cli import main

sys.exit(main())
