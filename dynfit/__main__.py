"""``python -m dynfit``: the same command line as ``dynfit``."""
import sys

from .cli import main

sys.exit(main())
