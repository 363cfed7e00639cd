"""``python -m dgmjax``: the same as the ``dgmjax`` command."""

import sys

from dgmjax.cli import main

sys.exit(main())
