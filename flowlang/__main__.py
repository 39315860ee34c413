"""``python -m flowlang``: the command line (the same as the ``flowlang`` command)."""

import sys

from flowlang.cli import main

sys.exit(main())
