"""``python -m thoracic``: the same as the ``thoracic`` command."""

import sys

from thoracic.cli import main

sys.exit(main())
