#!/usr/bin/env python
"""NASNet-Mobile recipe: the Keras guide's rates, fine-tuning the last cell stage.

    python recipes/nasnet_mobile.py --data ~/photos                 # ImageNet weights
    python recipes/nasnet_mobile.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/nasnet_mobile.py --data ~/photos --print-config  # resolved settings

Any recipe key is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...). The settings
and their sources live in the package (transferkit/training/recipe_book.py):
`transferkit recipes nasnet_mobile` prints them; `transferkit train --recipe nasnet_mobile` is the same run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("nasnet_mobile"))
