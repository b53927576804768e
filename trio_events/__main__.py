import sys

from trio_events._cli._main import main

sys.exit(main())
