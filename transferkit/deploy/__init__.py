"""Deployment: exports that real runtimes load as they are (.keras, SavedModel for TF
Serving, TFLite with MediaPipe metadata), the predictors that run them, parity, model card.

    path = export_model(load_run("runs/pets"), "tflite", "exports/", quantize="fp16")
    predict = load_predictor(path)
"""

from transferkit.deploy.export import (ALL, FORMATS, INPUT_SPEC, QUANTIZE, artifact_name,
                                       export_model, export_plan, representative_images,
                                       tflite_bytes)
from transferkit.deploy.parity import (artifact_format, check_parity, format_parity,
                                       raise_on_mismatch, size_bytes)
from transferkit.deploy.predictors import load_predictor, tflite_interpreter
from transferkit.deploy.serving import (BYTES_INPUT, BYTES_SIGNATURE, FLOAT_SIGNATURE,
                                        serving_archive)

__all__ = ["ALL", "BYTES_INPUT", "BYTES_SIGNATURE", "FLOAT_SIGNATURE", "FORMATS",
           "INPUT_SPEC", "QUANTIZE", "artifact_format", "artifact_name", "check_parity",
           "export_model", "export_plan", "format_parity", "load_predictor",
           "raise_on_mismatch", "representative_images", "serving_archive", "size_bytes",
           "tflite_bytes", "tflite_interpreter"]
