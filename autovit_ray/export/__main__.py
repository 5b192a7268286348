"""`python -m autovit_ray.export`: the CLI lives in autovit_ray/export_cli.py."""

import sys

from autovit_ray.export_cli import main

sys.exit(main())
