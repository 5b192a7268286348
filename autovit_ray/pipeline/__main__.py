"""`python -m autovit_ray.pipeline`: see autovit_ray/pipeline/cli.py."""

import sys

from autovit_ray.pipeline.cli import main

sys.exit(main())
