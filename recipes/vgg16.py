#!/usr/bin/env python
"""VGG16 recipe: fine-tune the last conv block, after Chollet's 'very little data' post.

    python recipes/vgg16.py --data ~/photos                 # ImageNet weights
    python recipes/vgg16.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/vgg16.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "backbone": "vgg16",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 224,  # Simonyan & Zisserman 2015: 224 px (Keras default_size)
    "batch_size": 16,  # Chollet 2016 "very little data" blog post: 16
    "augment": "medium",  # Chollet 2016: shear 0.2, zoom 0.2, horizontal flip
    "head_units": (256,),  # Chollet 2016: Dense(256, relu) top model
    "dropout": 0.5,  # Chollet 2016: Dropout(0.5)
    "head_epochs": 10,  # TF tutorial: initial_epochs = 10 (the post trains its top for 50)
    "finetune_epochs": 10,  # TF tutorial: fine_tune_epochs = 10
    "unfreeze": "last_blocks:1",  # Chollet 2016: fine-tune the last conv block (block5)
    "head_lr": 1e-3,  # Keras transfer-learning guide: Adam() default for the new top
    "finetune_lr": 1e-5,  # Keras guide's Adam(1e-5); no SGD momentum flag here
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
