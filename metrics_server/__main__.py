import sys

from metrics_server.cli import main

sys.exit(main())
