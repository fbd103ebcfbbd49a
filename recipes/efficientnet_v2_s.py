#!/usr/bin/env python
"""EfficientNetV2-S recipe: the Keras EfficientNet fine-tuning example at V2-S's size.

    python recipes/efficientnet_v2_s.py --data ~/photos                 # ImageNet weights
    python recipes/efficientnet_v2_s.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/efficientnet_v2_s.py --data ~/photos --print-config  # resolved settings

Any recipe key is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...). The settings
and their sources live in the package (transferkit/training/recipe_book.py):
`transferkit recipes efficientnet_v2_s` prints them; `transferkit train --recipe efficientnet_v2_s` is the same run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("efficientnet_v2_s"))
