import sys

from gamornet.cli import main

sys.exit(main())
