#!/usr/bin/env python
"""U-Net on MobileNetV2: the TensorFlow image segmentation tutorial, in two phases.

    python recipes/unet_mobilenet_v2.py --data ~/scans              # images/ + masks/
    python recipes/unet_mobilenet_v2.py --data pairs.csv --weights FILE
    python recipes/unet_mobilenet_v2.py --data ~/scans --print-config

`--data` is a folder with images/ and masks/ (class-index PNGs, palette PNGs included)
or a CSV of image,mask rows. Any RecipeConfig field is a flag. Source of the defaults:
https://www.tensorflow.org/tutorials/images/segmentation (see recipes/README.md).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

DEFAULTS = {
    "task": "segmentation",
    "backbone": "mobilenet_v2",  # tutorial: MobileNetV2 encoder, skips block_1/3/6/13
    "weights": "imagenet",  # tutorial: weights='imagenet'; --weights PATH offline
    "image_size": 128,  # tutorial: inputs resized to 128x128
    "batch_size": 64,  # tutorial: BATCH_SIZE = 64
    "augment": "light",  # tutorial: random horizontal flip of image and mask together
    "decoder_width": 64,  # tutorial: up_stack 512, 256, 128, 64 filters (deep to shallow)
    "segmentation_loss": "crossentropy",  # tutorial: SparseCategoricalCrossentropy
    "head_epochs": 20,  # tutorial: EPOCHS = 20 with the encoder frozen
    "head_lr": 1e-3,  # tutorial: optimizer='adam' (Keras default rate 1e-3)
    # The tutorial stops there; phase 2 follows the TF transfer-learning tutorial (as
    # recipes/mobilenet_v2.py): the upper blocks at a 10x-100x lower rate, BN frozen.
    "finetune_epochs": 10,  # TF transfer-learning tutorial: fine_tune_epochs = 10
    "finetune_lr": 1e-5,  # TF transfer-learning tutorial: base_learning_rate / 10
    "unfreeze": "last_blocks:6",  # TF transfer-learning tutorial: fine_tune_at = 100
    "train_batchnorm": False,  # tutorial: the encoder runs with training=False
}

if __name__ == "__main__":
    sys.exit(run_recipe(DEFAULTS))
