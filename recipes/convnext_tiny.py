#!/usr/bin/env python
"""ConvNeXtTiny recipe: the ConvNeXt paper's fine-tuning settings on the last stage.

    python recipes/convnext_tiny.py --data ~/photos                 # ImageNet weights
    python recipes/convnext_tiny.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/convnext_tiny.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "backbone": "convnext_tiny",
    "weights": "imagenet",  # Keras Applications weights; --weights PATH for a local file
    "image_size": 224,  # Liu et al. 2022: 224 px (Keras default_size)
    "batch_size": 32,  # TF tutorial's 32 (the paper's 512 is a multi-GPU figure)
    "augment": "strong",  # Liu et al. 2022 app. A: RandAugment, Mixup, CutMix
    "dropout": 0.2,  # Keras transfer-learning guide: Dropout(0.2)
    "label_smoothing": 0.1,  # Liu et al. 2022 app. A: label smoothing 0.1
    "optimizer": "adamw",  # Liu et al. 2022 app. A: AdamW
    "weight_decay": 1e-8,  # Liu et al. 2022 app. A: fine-tuning weight decay 1e-8
    "head_epochs": 10,  # TF tutorial: initial_epochs = 10
    "head_lr": 1e-3,  # Keras transfer-learning guide: Adam() default for the new top
    "finetune_epochs": 10,  # TF tutorial: fine_tune_epochs = 10
    "finetune_lr": 5e-5,  # Liu et al. 2022 app. A: fine-tuning learning rate 5e-5
    "unfreeze": "last_blocks:4",  # Liu et al.: last stage (3 blocks) + its downsampling
    "train_batchnorm": False,  # no BatchNorm in ConvNeXt (LayerNorm); kept for uniformity
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
