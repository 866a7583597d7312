import sys

from seg_suite.cli import main

sys.exit(main())
