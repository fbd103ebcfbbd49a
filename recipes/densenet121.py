#!/usr/bin/env python
"""DenseNet121 recipe: fine-tune the last dense block at the Keras guide's 1e-5.

    python recipes/densenet121.py --data ~/photos                 # ImageNet weights
    python recipes/densenet121.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/densenet121.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "backbone": "densenet121",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 224,  # Huang et al. 2017: 224 px (Keras default_size)
    "batch_size": 32,  # TF tutorial's 32
    "augment": "light",  # Huang et al. 2017 (ImageNet): crop + flip
    "dropout": 0.2,  # Keras transfer-learning guide: Dropout(0.2)
    "head_epochs": 10,  # TF tutorial: initial_epochs = 10
    "finetune_epochs": 10,  # TF tutorial: fine_tune_epochs = 10
    "unfreeze": "last_blocks:16",  # Huang et al. 2017: dense block 4 = conv5_block1..16
    "head_lr": 1e-3,  # Keras transfer-learning guide: Adam() default for the new top
    "finetune_lr": 1e-5,  # Keras transfer-learning guide: Adam(1e-5) for fine-tuning
    "train_batchnorm": False,  # Keras transfer-learning guide: BN stays in inference mode
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
