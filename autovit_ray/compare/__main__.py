"""`python -m autovit_ray.compare`: see autovit_ray/compare/cli.py."""

import sys

from autovit_ray.compare.cli import main

sys.exit(main())
