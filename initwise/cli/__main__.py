"""``python -m initwise.cli``: the same as the ``initwise`` command."""
import sys

from . import main

sys.exit(main())
