#!/usr/bin/env python
"""U-Net on MobileNetV2: the TensorFlow image segmentation tutorial, in two phases.

    python recipes/unet_mobilenet_v2.py --data ~/scans              # images/ + masks/
    python recipes/unet_mobilenet_v2.py --data pairs.csv --weights FILE
    python recipes/unet_mobilenet_v2.py --data ~/scans --print-config

`--data` is a folder with images/ and masks/ (class-index PNGs, palette PNGs included)
or a CSV of image,mask rows. Any recipe key is a flag. The settings and their sources
(https://www.tensorflow.org/tutorials/images/segmentation) live in the package:
`transferkit recipes unet_mobilenet_v2` prints them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("unet_mobilenet_v2"))
