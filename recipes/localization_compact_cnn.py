#!/usr/bin/env python
"""Localization on the shipped compact_cnn: one object's class and box per image.

    python recipes/localization_compact_cnn.py --data data/localization/boxes.csv
    python recipes/localization_compact_cnn.py --data ~/voc_folder --out runs/boxes

`--data` is a CSV of path,label,xmin,ymin,xmax,ymax rows (pixels of each image) or a
Pascal VOC folder. Any recipe key is a flag. The settings and where they come from:
`transferkit recipes localization_compact_cnn` prints them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # from a checkout

from transferkit.cli.recipes import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("localization_compact_cnn"))
