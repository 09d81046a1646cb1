"""``python -m shared.client``: the client commands without the rest of `tlr`."""

import sys

from shared.client.commands import main

sys.exit(main())
