"""MODEL_CARD.md for an export folder: what the model does, what each artifact is and
scores, and how to load it (Keras, TF Serving REST, LiteRT, MediaPipe).

    path = write_model_card("exports/pets", loaded, paths, rows=rows, tolerance=0.01)

Everything task-specific comes from the model's `Task`: its headline metric, the
outputs of the SavedModel's encoded-image signature (`Task.serving_outputs`) and the
MediaPipe API that runs its .tflite (`TfliteOutput.mediapipe_api`).
"""

import os

import tensorflow as tf

from transferkit.core.files import write_text
from transferkit.deploy.export import INPUT_SPEC
from transferkit.deploy.parity import artifact_format, size_bytes
from transferkit.deploy.serving import BYTES_INPUT
from transferkit.models.bundle import LABELS_NAME

CARD = "MODEL_CARD.md"


def write_model_card(out_dir, loaded, artifacts, *, rows=None, tolerance=None):
    """Write `out_dir/MODEL_CARD.md` (atomically) for `loaded` (a LoadedModel) and the
    `artifacts` exported from it; `rows`: `check_parity`'s table, when --check ran.
    Returns the path."""
    path = os.path.join(out_dir, CARD)
    write_text(path, model_card(loaded, artifacts, rows=rows, tolerance=tolerance))
    return path


def model_card(loaded, artifacts, *, rows=None, tolerance=None):
    """The card's Markdown text (see `write_model_card`)."""
    task, names = loaded.task, list(loaded.class_names)
    height, width = loaded.input.size
    entries = [(artifact_format(a), os.path.basename(os.fspath(a).rstrip("/")), a)
               for a in artifacts]
    files = {fmt: name for fmt, name, _ in entries}
    cfg = loaded.config or {}
    lines = [f"# Model card: {task.name} model ({os.path.basename(loaded.path)})", "",
             "## Model", "",
             f"- **Task:** {task.name}; headline metric: {task.headline}.",
             f"- **Classes ({len(names)}, output order):** "
             f"{', '.join(names) if names else '(none: regression targets)'}. "
             f"`{LABELS_NAME}` lists them one per line.",
             f"- **Input:** {height}x{width} RGB; {INPUT_SPEC}. Resizing and the "
             "backbone's preprocessing are inside the model.",
             f"- **Source run:** `{os.path.abspath(loaded.path)}`"
             + (f" (backbone {cfg['backbone']})" if cfg.get("backbone") else "") + ".",
             "", "## Artifacts", "",
             "| format | file | size (MB) |", "|---|---|---|"]
    lines += [f"| {fmt} | `{name}` | {size_bytes(a) / 2 ** 20:.2f} |"
              for fmt, name, a in entries]
    lines += ["", "Each has a `<file>.json` beside it (class names, task, input spec); a "
              "SavedModel also holds it in `assets/`."]
    if rows:
        lines += ["", "## Accuracy per format", "",
                  f"Scored by `transferkit export --check` on the same images; agreement "
                  f"is how much of an artifact's predictions match the source Keras "
                  f"model's: the share of images with the same prediction, or for a "
                  f"detector the share of detections paired by class, IoU >= 0.9 and "
                  f"score (tolerance {tolerance}).", "",
                  f"| artifact | format | size (MB) | {task.headline} | agreement | "
                  f"ms/image | max abs diff | verdict |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['artifact']} | {r['format']} | {r['size_mb']:.2f} | "
                  f"{r[task.headline]:.4f} | {r['agreement']:.3f} | "
                  f"{r['ms_per_image']:.2f} | {r['max_abs_diff']:.4g} | "
                  f"{'ok' if r['ok'] else 'FAIL'} |" for r in rows]
    lines += ["", "## Intended use and limits", "",
              f"- For images like the training data{_data(cfg)}, at any size (they are "
              f"resized to {height}x{width}). On other kinds of images the outputs are "
              "unreliable and nothing warns about it"
              + (": every image gets one of the classes above, there is no 'none of "
                 "these'." if task.single_label else "."),
              "- Scores are the model's own, not calibrated unless the source model was "
              "(`transferkit evaluate --calibrate`).",
              "- fp16 and int8 TFLite files approximate the float model; the table above "
              "says by how much on the checked images.",
              "- The SavedModel's encoded-image signature decodes with "
              "`tf.io.decode_image` like training does, but training's scan first "
              "rewrites odd files with Pillow (EXIF rotation applied, CMYK, 16-bit, "
              "palette and transparent images turned into plain RGB, TIFF converted). "
              "Send plain 8-bit RGB or grayscale JPEG/PNG, already upright, or use "
              "`transferkit predict`, which scans like training."]
    lines += ["", "## How to load it", ""] + _usage(loaded, files)
    return "\n".join(lines) + "\n"


def _data(cfg):
    data = [v for v in (cfg.get("train"), cfg.get("data")) if isinstance(v, str) and v]
    return f" (`{data[0]}`)" if data else ""


def _usage(loaded, files):
    task, (height, width) = loaded.task, loaded.input.size
    out = []
    if "keras" in files:
        out += ["**Keras** (safe mode on; the file records task, classes and input size):",
                "", "```python", "import keras, numpy as np",
                f"model = keras.saving.load_model({files['keras']!r})",
                f"outputs = model.predict(images)  # float32 [B, {height}, {width}, 3], "
                "0-255", "```", "",
                f"or `transferkit predict {files['keras']} IMAGE... --json`.", ""]
    if "savedmodel" in files:
        folder = files["savedmodel"]
        example = task.serving_outputs(
            tf.zeros([1, *loaded.model.output_shape[1:]]), loaded.class_names)
        outputs = ", ".join(f"`{k}` {[None, *v.shape[1:]]}" for k, v in example.items())
        out += ["**TF Serving (REST).** The default signature `serving_default` takes "
                "encoded image files (JPEG, PNG, GIF, BMP, WebP) as strings, any size, "
                f"input `{BYTES_INPUT}`; it returns {outputs}. The signature `serve` "
                f"takes float32 images [B, {height}, {width}, 3] (0-255) and returns the "
                "model's raw output.", "", "```sh",
                f'docker run -p 8501:8501 -v "$PWD/{folder}:/models/model/1" '
                "-e MODEL_NAME=model tensorflow/serving",
                "curl -X POST http://localhost:8501/v1/models/model:predict \\",
                '  -d "{\\"instances\\": [{\\"b64\\": \\"$(base64 -w0 image.jpg)\\"}]}"',
                "```", "", "In Python, without a server:", "", "```python",
                "import tensorflow as tf",
                f"saved = tf.saved_model.load({folder!r})",
                "out = saved.signatures['serving_default']("
                f"{BYTES_INPUT}=tf.constant([open('image.jpg', 'rb').read()]))",
                "```", ""]
    tflite = [name for fmt, name in files.items() if fmt.startswith("tflite")]
    if tflite:
        output = task.tflite_output(loaded.class_names, loaded.model.output_shape[-1])
        detections = output.kind == "detections"
        read = (["outputs = {d['name']: interpreter.get_tensor(d['index']) for d in "
                 "interpreter.get_output_details()}"] if detections else
                ["outputs = interpreter.get_tensor("
                 "interpreter.get_output_details()[0]['index'])"])
        out += ["**LiteRT** (`pip install ai-edge-litert`; "
                f"{', '.join(f'`{n}`' for n in tflite)} all take float32 input):", "",
                "```python", "import numpy as np",
                "from ai_edge_litert.interpreter import Interpreter",
                "from PIL import Image",
                f"interpreter = Interpreter(model_path={tflite[0]!r})",
                "interpreter.allocate_tensors()",
                "image = Image.open('image.jpg').convert('RGB').resize("
                f"({width}, {height}), Image.BILINEAR)",
                "x = np.asarray(image, np.float32)[None]  # 0-255, no normalisation",
                "interpreter.set_tensor(interpreter.get_input_details()[0]['index'], x)",
                "interpreter.invoke()", *read, "```", ""]
        if detections:
            out += [_DETECTION_OUTPUTS.format(threshold=output.score_threshold), ""]
        if output.mediapipe_api:
            out += _mediapipe_usage(output.mediapipe_api, tflite[0])
    if loaded.novelty is not None:
        out += _novelty_usage(loaded.novelty, tflite)
    return out


_DETECTION_OUTPUTS = (
    "A detector's file computes the detections in its graph (non-max suppression "
    "included, scores above {threshold}) for one image at a time (batch 1), as four "
    "outputs in this order: `location` [1, N, 4] (xmin, ymin, xmax, ymax normalised to "
    "the image: multiply by its width and height), `category` [1, N] (the line of "
    "`labels.txt`, 0-based, as a float), `score` [1, N] and `number_of_detections` [1]: "
    "how many rows of the others hold a detection, best first (N: the most detections "
    "per image).")

# What each MediaPipe Tasks API takes and what its result holds (the file's output
# kind decides the API: `TfliteOutput.mediapipe_api`).
_MEDIAPIPE_CALLS = {
    "ImageClassifier": ("max_results=3", "classifier", "classify",
                        "print([(c.category_name, c.score) for c in "
                        "result.classifications[0].categories])"),
    "ImageSegmenter": ("output_category_mask=True", "segmenter", "segment",
                       "mask = result.category_mask.numpy_view()  # a class index per "
                       "pixel (labels: segmenter.labels)"),
    "ObjectDetector": ("max_results=-1", "detector", "detect",
                       "print([(d.categories[0].category_name, d.categories[0].score, "
                       "d.bounding_box) for d in result.detections])  # boxes in the "
                       "image's pixels"),
}


def _mediapipe_usage(api, path):
    """How MediaPipe Tasks' `api` runs the .tflite file `path`."""
    option, name, method, show = _MEDIAPIPE_CALLS[api]
    return [f"**MediaPipe {api}** (`pip install mediapipe`; it reads the class names and "
            "the input normalisation from the file's TFLite metadata, so use a file "
            "exported with that metadata):", "",
            "```python", "import mediapipe as mp",
            "from mediapipe.tasks.python import BaseOptions, vision",
            f"options = vision.{api}Options(base_options="
            f"BaseOptions(model_asset_path={path!r}), {option})",
            f"with vision.{api}.create_from_options(options) as {name}:",
            f"    result = {name}.{method}(mp.Image.create_from_file('image.jpg'))",
            show, "```", ""]


def _novelty_usage(novelty, tflite):
    """How a client reads the novelty score the exports carry."""
    lines = [f"**Novelty** ({novelty.detector}; higher: more unlike the training classes): "
             f"an image is unknown when its score is above {novelty.threshold:.6g} "
             f"(calibrated so {novelty.false_rejection:.0%} of validation images are). "
             "The SavedModel's `serving_default` returns `novelty` and `unknown`."]
    if tflite:
        lines[0] += (" The .tflite files return it as their second output, `novelty` "
                     "[B, 1] (`get_output_details()[1]`); in MediaPipe it is "
                     "`result.classifications[1]`, which lists the category `unknown` "
                     "only for images above the threshold (read from the file's "
                     "metadata).")
    return lines + [""]
