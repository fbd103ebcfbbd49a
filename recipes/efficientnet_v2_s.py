#!/usr/bin/env python
"""EfficientNetV2-S recipe: the Keras EfficientNet fine-tuning example at V2-S's size.

    python recipes/efficientnet_v2_s.py --data ~/photos                 # ImageNet weights
    python recipes/efficientnet_v2_s.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/efficientnet_v2_s.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import KERAS_EFFICIENTNET_EXAMPLE, run_recipe

DEFAULTS = {
    **KERAS_EFFICIENTNET_EXAMPLE,  # augment, dropout, epochs, rates, unfreeze top 20
    "backbone": "efficientnet_v2_s",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 384,  # Tan & Le 2021 / Keras EfficientNetV2S default_size = 384
    "batch_size": 16,  # Keras example's 64 scaled by pixels (384^2 vs 224^2): judgement
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
