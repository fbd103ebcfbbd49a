#!/usr/bin/env python
"""MobileNetV3Large recipe: the TF tutorial's MobileNet schedule on V3-Large.

    python recipes/mobilenet_v3_large.py --data ~/photos                 # ImageNet weights
    python recipes/mobilenet_v3_large.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/mobilenet_v3_large.py --data ~/photos --print-config  # resolved settings

Any recipe key is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...). The settings
and their sources live in the package (transferkit/training/recipe_book.py):
`transferkit recipes mobilenet_v3_large` prints them; `transferkit train --recipe mobilenet_v3_large` is the same run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("mobilenet_v3_large"))
