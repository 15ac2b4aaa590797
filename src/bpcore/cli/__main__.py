"""``python -m bpcore.cli``: the same program as ``bpcore``."""
import sys

from bpcore.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
