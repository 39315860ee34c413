"""``python -m flowlang.cli``: the command line."""

import sys

from flowlang.cli import main

sys.exit(main())
