"""The SavedModel TF Serving loads: encoded image bytes in, the task's named outputs out.

    archive, endpoints = serving_archive(loaded)
    archive.write_out("exports/saved_model")
"""

import keras
import tensorflow as tf

from transferkit.data.pipeline import decode_bytes
from transferkit.models.novelty import novelty_model

BYTES_SIGNATURE = "serving_default"  # encoded JPEG/PNG/... bytes in: TF Serving's default
FLOAT_SIGNATURE = "serve"  # float32 RGB 0-255 images in: `load_predictor`, Keras's name
BYTES_INPUT = "image_bytes"


def serving_archive(loaded):
    """(Keras ExportArchive of `loaded.model`, {name: tf.function}): two signatures,

    `serving_default`: `image_bytes` [B] strings of encoded images (JPEG, PNG, GIF,
        BMP, WebP; what TF Serving's REST API sends as {"b64": ...}), decoded and
        resized in the graph by the pipeline's own decoder (`data.pipeline.
        decode_bytes`); outputs are the task's (`Task.serving_outputs`), e.g. a
        classifier's `scores`, `classes` and `label`; with a novelty score in the
        model, also `novelty` [B] (higher: more unusual) and `unknown` [B] (above its
        threshold).
    `serve`: float32 RGB 0-255 images [B, H, W, 3] -> the model's output, as
        `model.export` writes it.
    """
    model, task, names = loaded.model, loaded.task, tuple(loaded.class_names)
    size, novelty = loaded.input.size, loaded.novelty
    archive = keras.export.ExportArchive()
    archive.track(model)
    # With a novelty score: one pass gives the output and the novelty.
    both = None if novelty is None else novelty_model(model, task, novelty)

    def from_bytes(image_bytes):
        images = tf.map_fn(lambda data: decode_bytes(data, size), image_bytes,
                           fn_output_signature=tf.TensorSpec([*size, 3], tf.float32))
        if both is None:
            return task.serving_outputs(model(images, training=False), names)
        outputs, score = both(images)
        return {**task.serving_outputs(outputs, names), "novelty": score,
                "unknown": score > novelty.threshold}

    endpoints = {
        BYTES_SIGNATURE: archive.add_endpoint(
            BYTES_SIGNATURE, tf.function(from_bytes),
            input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)]),
        FLOAT_SIGNATURE: archive.add_endpoint(
            FLOAT_SIGNATURE, tf.function(lambda images: model(images, training=False)),
            input_signature=[tf.TensorSpec([None, *size, 3], tf.float32, name="images")])}
    return archive, endpoints


def signature_summary(endpoints):
    """{signature: {"inputs": {name: [dtype, shape]}, "outputs": {...}}} for the
    metadata and the model card."""
    def specs(structure):
        flat = structure if isinstance(structure, dict) else {"output_0": structure}
        return {k: [v.dtype.name, [None if d is None else int(d) for d in v.shape]]
                for k, v in sorted(flat.items())}

    out = {}
    for name, fn in endpoints.items():
        concrete = fn.get_concrete_function()
        args = concrete.structured_input_signature[0]
        out[name] = {"inputs": specs({a.name: a for a in args}),
                     "outputs": specs(concrete.structured_outputs)}
    return out


