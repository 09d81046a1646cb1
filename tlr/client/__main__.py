"""``python -m tlr.client``: the client commands without the rest of `tlr`."""

import sys

from tlr.client.commands import main

sys.exit(main())
