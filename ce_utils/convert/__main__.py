"""``python -m ce_utils.convert [SPEC ...] [--profile NAME] [--cache-dir DIR]``."""

import sys

from ce_utils.convert import main

sys.exit(main())
