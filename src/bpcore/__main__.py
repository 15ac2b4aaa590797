"""``python -m bpcore``: the command line (see :mod:`bpcore.cli`)."""
import sys

from bpcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
