"""`python -m autovit_ray.report`: see autovit_ray/report/cli.py."""

import sys

from autovit_ray.report.cli import main

sys.exit(main())
