import sys

from trio_events._cli._main import main

# Guarded: the agent's conversion workers are spawned processes, which import the main module.
if __name__ == "__main__":
    sys.exit(main())
