"""`python3 -m osbuild`: the command-line interface."""

import sys

from osbuild.main_cli import main

sys.exit(main())
