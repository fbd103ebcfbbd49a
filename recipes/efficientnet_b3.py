#!/usr/bin/env python
"""EfficientNetB3 recipe: the Keras EfficientNet example's schedule at B3's resolution.

    python recipes/efficientnet_b3.py --data ~/photos                 # ImageNet weights
    python recipes/efficientnet_b3.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/efficientnet_b3.py --data ~/photos --print-config  # resolved settings

Any recipe key is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...). The settings
and their sources live in the package (transferkit/training/recipe_book.py):
`transferkit recipes efficientnet_b3` prints them; `transferkit train --recipe efficientnet_b3` is the same run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("efficientnet_b3"))
