"""``python -m evalkit``: the ``evalkit`` command, also as launchers run it (``accelerate launch -m evalkit train``)."""

import sys

from evalkit.cli import main

sys.exit(main())
