"""Entry point of a benchmark task's child process: ``python -m dynfit.benchmark._child TASK_JSON
PATH``."""

import sys

from .runner import child_main

if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
