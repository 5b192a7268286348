"""`python -m autovit_ray.fidelity`: see autovit_ray/fidelity/cli.py."""

import sys

from autovit_ray.fidelity.cli import main

sys.exit(main())
