import sys

from trio_events._cli import main

sys.exit(main())
