#!/usr/bin/env python
"""EfficientNetB3 recipe: the Keras EfficientNet example's schedule at B3's resolution.

    python recipes/efficientnet_b3.py --data ~/photos                 # ImageNet weights
    python recipes/efficientnet_b3.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/efficientnet_b3.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import KERAS_EFFICIENTNET_EXAMPLE, run_recipe

DEFAULTS = {
    **KERAS_EFFICIENTNET_EXAMPLE,  # augment, dropout, epochs, rates, unfreeze top 20
    "backbone": "efficientnet_b3",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 300,  # Tan & Le 2019 compound scaling: B3 = 300 px (Keras default_size)
    "batch_size": 32,  # half the example's 64: 300 px needs ~1.8x the memory of 224 px
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
