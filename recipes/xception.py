#!/usr/bin/env python
"""Xception recipe: the Keras transfer-learning guide (its own backbone), as published.

    python recipes/xception.py --data ~/photos                 # ImageNet weights
    python recipes/xception.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/xception.py --data ~/photos --print-config  # resolved settings

Any recipe key is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...). The settings
and their sources live in the package (transferkit/training/recipe_book.py):
`transferkit recipes xception` prints them; `transferkit train --recipe xception` is the same run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("xception"))
