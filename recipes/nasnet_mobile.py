#!/usr/bin/env python
"""NASNet-Mobile recipe: the Keras guide's rates, fine-tuning the last cell stage.

    python recipes/nasnet_mobile.py --data ~/photos                 # ImageNet weights
    python recipes/nasnet_mobile.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/nasnet_mobile.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "backbone": "nasnet_mobile",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 224,  # Zoph et al. 2018, NASNet-A (4 @ 1056): 224 px (Keras default)
    "batch_size": 32,  # TF tutorial: BATCH_SIZE = 32
    "augment": "light",  # TF-slim NASNet training: Inception crops + horizontal flips
    "dropout": 0.5,  # TF-slim nasnet.py mobile_imagenet_config: dense_dropout_keep_prob=0.5
    "head_epochs": 10,  # TF tutorial: initial_epochs = 10
    "head_lr": 1e-3,  # Keras transfer-learning guide: Adam() default for the new top
    "finetune_epochs": 10,  # TF tutorial: fine_tune_epochs = 10
    "finetune_lr": 1e-5,  # Keras transfer-learning guide: Adam(1e-5) when fine-tuning
    "unfreeze": "last_blocks:5",  # Zoph et al.: the last stage's N=4 normal cells + top
    "train_batchnorm": False,  # Keras guide: BatchNorm stays in inference mode
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
