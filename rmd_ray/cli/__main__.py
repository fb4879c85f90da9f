"""``python -m rmd_ray.cli ...``: the ``rmd-ray`` command without the installed script."""

import sys

from rmd_ray.cli.main import main

sys.exit(main())
