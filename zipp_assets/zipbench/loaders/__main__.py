"""`python -m zipp_assets.zipbench.loaders inspect PATH [--format NAME] [--json]` (see `cli`)."""

import sys

from zipp_assets.zipbench.loaders.cli import main

sys.exit(main())
