"""`python -m autovit_ray.fewshot`: see autovit_ray/fewshot/cli.py."""

import sys

from autovit_ray.fewshot.cli import main

sys.exit(main())
