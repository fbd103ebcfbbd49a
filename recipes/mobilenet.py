#!/usr/bin/env python
"""MobileNet (v1) recipe: the TF transfer-learning tutorial's schedule, on MobileNet v1.

    python recipes/mobilenet.py --data ~/photos                 # ImageNet weights
    python recipes/mobilenet.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/mobilenet.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "backbone": "mobilenet",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 224,  # Howard et al. 2017: 224 px (Keras MobileNet default_size)
    "batch_size": 32,  # TF tutorial: BATCH_SIZE = 32
    "augment": "medium",  # TF tutorial: RandomFlip("horizontal") + RandomRotation(0.2)
    "dropout": 0.001,  # Keras MobileNet: dropout=1e-3 before its classifier
    "head_epochs": 10,  # TF tutorial: initial_epochs = 10
    "head_lr": 1e-4,  # TF tutorial: base_learning_rate = 0.0001
    "finetune_epochs": 10,  # TF tutorial: fine_tune_epochs = 10
    "finetune_lr": 1e-5,  # TF tutorial: base_learning_rate / 10
    "unfreeze": "last_blocks:5",  # same share as the tutorial's MobileNetV2 (judgement)
    "train_batchnorm": False,  # TF tutorial: base called with training=False
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
