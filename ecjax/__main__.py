"""`python -m ecjax`: the `ecjax` command."""

import sys

from .cli import main

sys.exit(main())
