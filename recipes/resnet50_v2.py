#!/usr/bin/env python
"""ResNet50V2 recipe: fine-tune the conv5 stage at the Keras guide's 1e-5.

    python recipes/resnet50_v2.py --data ~/photos                 # ImageNet weights
    python recipes/resnet50_v2.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/resnet50_v2.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "backbone": "resnet50_v2",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 224,  # He et al. 2016 (identity mappings): 224 px (Keras default_size)
    "batch_size": 32,  # TF tutorial's 32: fits a CPU or a small GPU at 224 px
    "augment": "light",  # He et al. 2016: random crop + horizontal flip
    "dropout": 0.2,  # Keras transfer-learning guide: Dropout(0.2)
    "head_epochs": 10,  # TF tutorial: initial_epochs = 10
    "finetune_epochs": 10,  # TF tutorial: fine_tune_epochs = 10
    "unfreeze": "last_blocks:3",  # conv5 stage (3 blocks) plus post_bn/post_relu
    "head_lr": 1e-3,  # Keras transfer-learning guide: Adam() default for the new top
    "finetune_lr": 1e-5,  # Keras transfer-learning guide: Adam(1e-5) for fine-tuning
    "train_batchnorm": False,  # Keras transfer-learning guide: BN stays in inference mode
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
