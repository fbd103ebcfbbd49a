"""Data: sources, the health scan, image I/O, splits, augmentation and the pipeline.

Boxed objects: `data.annotations` reads CSV, Pascal VOC, COCO and YOLO annotations
(`read_objects`, `pad_objects`); `data.box_augment` moves boxes with their image.

    from transferkit.data import load_data
    splits = load_data("~/photos", image_size=224, augment=augment_config("light"))

`data.config` (DataConfig, AugmentConfig and its presets) is light; the names below
load their module (and TensorFlow) on first use.
"""

from transferkit.core.lazy import lazy_package

__all__ = lazy_package(__name__, {
    **dict.fromkeys(("AUGMENT_PRESETS", "AugmentConfig", "DataConfig", "augment_config"),
                    "transferkit.data.config"),
    **dict.fromkeys(("image_dataset", "list_source"), "transferkit.data.files"),
    "load_data": "transferkit.data.load",
    **dict.fromkeys(("as_batches", "dataset_from_arrays", "decode_image", "make_dataset"),
                    "transferkit.data.pipeline"),
    **dict.fromkeys(("ScanReport", "scan"), "transferkit.data.scan"),
    **dict.fromkeys(("DataSplits", "stratified_sample", "stratified_split"),
                    "transferkit.data.splits")})
