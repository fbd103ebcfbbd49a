#!/usr/bin/env python
"""InceptionResNetV2 recipe: fine-tune the Inception-ResNet-C stage.

    python recipes/inception_resnet_v2.py --data ~/photos                 # ImageNet weights
    python recipes/inception_resnet_v2.py --data ~/photos --weights FILE  # local .h5 / .keras
    python recipes/inception_resnet_v2.py --data ~/photos --print-config  # resolved settings

Any recipe key is a flag (`--finetune-lr 3e-5`, `--image-size 160`, ...). The settings
and their sources live in the package (transferkit/training/recipe_book.py):
`transferkit recipes inception_resnet_v2` prints them; `transferkit train --recipe inception_resnet_v2` is the same run.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("inception_resnet_v2"))
