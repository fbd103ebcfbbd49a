#!/usr/bin/env python
"""Xception recipe: the Keras transfer-learning guide (its own backbone), as published.

    python recipes/xception.py --data ~/photos                 # ImageNet weights
    python recipes/xception.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/xception.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "backbone": "xception",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 299,  # Chollet 2017: 299 px (the Keras guide uses 150 for speed)
    "batch_size": 64,  # Keras transfer-learning guide: batch_size = 64
    "augment": "medium",  # Keras transfer-learning guide: flip + rotation 0.1
    "dropout": 0.2,  # Keras transfer-learning guide: Dropout(0.2)
    "head_epochs": 10,  # TF tutorial: 10 (the guide runs 2 to keep the docs build short)
    "finetune_epochs": 10,  # TF tutorial: 10 (the guide runs 1)
    "unfreeze": "none",  # Keras transfer-learning guide: the whole base trains
    "head_lr": 1e-3,  # Keras transfer-learning guide: Adam() default for the new top
    "finetune_lr": 1e-5,  # Keras transfer-learning guide: Adam(1e-5) for fine-tuning
    "train_batchnorm": False,  # Keras transfer-learning guide: BN stays in inference mode
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
