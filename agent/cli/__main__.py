"""``python -m agent.cli``: the same as the ``edge-agent`` console script."""

import sys

from agent.cli import main

sys.exit(main())
