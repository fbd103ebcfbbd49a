"""`transferkit predict`: what a model says about image files, decoded as in training."""

import json
import os

from transferkit.cli.common import add_model_args, command, loaded_model
from transferkit.cli.flags import add_config_flags, config_from_args
from transferkit.core.errors import ConfigError
from transferkit.evaluation.config import PredictConfig

EPILOG = """examples:
  transferkit predict runs/pets cat.jpg dog.png
  transferkit predict runs/pets/model.keras photos/*.jpg --top-k 3 --tta
  transferkit predict runs/pets cat.jpg --gradcam cams/
  transferkit predict runs/shapes photo.png --out masks/    # segmentation: mask PNGs
"""


def register(sub):
    p = command(sub, "predict", "Print the top classes and probabilities of images (or "
                "the predicted values, for regression).", EPILOG)
    add_model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    add_config_flags(p, PredictConfig)  # --top-k, --batch-size
    p.add_argument("--gradcam", metavar="DIR", help="write Grad-CAM overlays here")
    p.add_argument("--json", action="store_true", help="print JSON lines instead")
    p.add_argument("--out", metavar="DIR", help="segmentation: write each image's "
                   "predicted mask (class-index palette PNG) and an overlay here; "
                   "detection and localization: each image with its boxes drawn")
    p.set_defaults(func=run)


def run(args):
    settings = config_from_args(PredictConfig, args)  # checked before any work
    from transferkit.evaluation.evaluate import predict

    loaded = loaded_model(args.model, args)
    if args.out and not loaded.task.writes_predictions:  # before any prediction
        raise ConfigError(f"--out writes per-image prediction files (masks), which "
                          f"task={loaded.task.name!r} does not have; use --json for its "
                          "predictions.")
    rows = predict(loaded, args.images, top_k=settings.top_k,
                   batch_size=settings.batch_size)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            scores = loaded.task.prediction_line(row)
            unknown = "unknown (none of the classes?); " if row.get("unknown") else ""
            print(f"{row['image']}: {unknown}{scores}")
    if args.gradcam:
        _gradcam(args, loaded, rows)
    if args.out:
        _prediction_files(args, loaded)


def _prediction_files(args, loaded):
    import numpy as np

    from transferkit.data.files import image_dataset

    dataset, _ = image_dataset(args.images, loaded.input.size)
    images, outputs = [], []
    for batch, _ in dataset:
        images.extend(batch.numpy())
        outputs.append(loaded.model.predict_on_batch(batch.numpy()))
    print(loaded.task.write_predictions(np.concatenate(outputs), images, args.images,
                                        args.out, loaded.class_names))


def _gradcam(args, loaded, rows):
    from transferkit.data.files import image_dataset
    from transferkit.evaluation.gradcam import grad_cam, save_overlay
    from transferkit.models.tta import unwrap_tta

    # Grad-CAM walks the model's parts, which the TTA wrapper hides: use the plain model.
    model = unwrap_tta(loaded.keras_model("--gradcam"))
    dataset, _ = image_dataset(args.images, loaded.input.size, batch_size=1)
    os.makedirs(args.gradcam, exist_ok=True)
    for i, ((image, _), path) in enumerate(zip(dataset, args.images)):
        image = image.numpy()[0]
        heatmap = grad_cam(model, image)
        # The index keeps red/0.png and blue/0.png from overwriting each other.
        name = f"{i:03d}_{os.path.splitext(os.path.basename(path))[0]}_gradcam.png"
        print(f"Grad-CAM: {save_overlay(image, heatmap, os.path.join(args.gradcam, name))}")
