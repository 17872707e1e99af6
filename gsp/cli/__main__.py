"""``python -m gsp.cli``: the ``gsp`` command."""

import sys

from gsp.cli import main

sys.exit(main())
