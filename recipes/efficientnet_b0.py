#!/usr/bin/env python
"""EfficientNetB0 recipe: the Keras EfficientNet fine-tuning example, as published.

    python recipes/efficientnet_b0.py --data ~/photos                 # ImageNet weights
    python recipes/efficientnet_b0.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/efficientnet_b0.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import KERAS_EFFICIENTNET_EXAMPLE, run_recipe

DEFAULTS = {
    **KERAS_EFFICIENTNET_EXAMPLE,  # augment, dropout, epochs, rates, unfreeze top 20
    "backbone": "efficientnet_b0",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 224,  # Tan & Le 2019 compound scaling: B0 = 224 px (Keras IMG_SIZE = 224)
    "batch_size": 64,  # Keras EfficientNet example: BATCH_SIZE = 64
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
