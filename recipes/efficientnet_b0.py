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

from transferkit.recipes_cli import run_recipe  # noqa: E402

DEFAULTS = {
    "backbone": "efficientnet_b0",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 224,  # Tan & Le 2019 compound scaling: B0 = 224 px (Keras IMG_SIZE = 224)
    "batch_size": 64,  # Keras EfficientNet example: BATCH_SIZE = 64
    "augment": "medium",  # Keras EfficientNet example: rotate, translate, flip, contrast
    "dropout": 0.2,  # Keras EfficientNet example: top_dropout_rate = 0.2
    "head_epochs": 25,  # Keras EfficientNet example: 25 epochs on the frozen base
    "head_lr": 1e-2,  # Keras EfficientNet example: Adam(1e-2) for the new top
    "finetune_epochs": 4,  # Keras EfficientNet example: 4 epochs after unfreezing
    "finetune_lr": 1e-5,  # Keras EfficientNet example: Adam(1e-5)
    "unfreeze": "top_layers:20",  # Keras EfficientNet example: top 20 layers ...
    "train_batchnorm": False,  # ... except BatchNormalization, which stays frozen
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
