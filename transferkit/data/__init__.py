"""Data: sources, the health scan, image I/O, splits, augmentation and the pipeline.

Boxed objects: `data.annotations` reads CSV, Pascal VOC, COCO and YOLO annotations
(`read_objects`, `pad_objects`); `data.box_augment` moves boxes with their image.

    from transferkit.data import load_data
    splits = load_data("~/photos", image_size=224, augment=augment_config("light"))
"""

from transferkit.data.augment import AUGMENT_PRESETS, AugmentConfig, augment_config
from transferkit.data.files import image_dataset, list_source
from transferkit.data.load import load_data
from transferkit.data.pipeline import (as_batches, dataset_from_arrays, decode_image,
                                       make_dataset)
from transferkit.data.scan import ScanReport, scan
from transferkit.data.splits import DataSplits, stratified_sample, stratified_split

__all__ = ["AUGMENT_PRESETS", "AugmentConfig", "DataSplits", "ScanReport",
           "as_batches", "augment_config", "dataset_from_arrays", "decode_image",
           "image_dataset", "list_source", "load_data", "make_dataset", "scan",
           "stratified_sample", "stratified_split"]
