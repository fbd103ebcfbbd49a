#!/usr/bin/env python
"""InceptionV3 recipe: the Keras Applications 'fine-tune InceptionV3' example.

    python recipes/inception_v3.py --data ~/photos                 # ImageNet weights
    python recipes/inception_v3.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/inception_v3.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "backbone": "inception_v3",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 299,  # Szegedy et al. 2016: 299 px (Keras default_size)
    "batch_size": 32,  # TF tutorial's 32: fits a CPU or a small GPU at 299 px
    "augment": "light",  # the Keras example has none; crop + flip is the usual minimum
    "head_units": (1024,),  # Keras Applications example: Dense(1024, relu)
    "dropout": 0.0,  # Keras Applications example: no dropout
    "head_epochs": 10,  # TF tutorial: initial_epochs = 10
    "finetune_epochs": 10,  # TF tutorial: fine_tune_epochs = 10
    "unfreeze": "last_blocks:2",  # Keras Applications example: top 2 inception blocks
    "head_lr": 1e-3,  # Keras transfer-learning guide: Adam() default for the new top
    "finetune_lr": 1e-5,  # Keras guide's Adam(1e-5); no SGD momentum flag here
    "train_batchnorm": False,  # Keras transfer-learning guide: BN stays in inference mode
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
