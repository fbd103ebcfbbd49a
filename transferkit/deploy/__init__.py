"""Deployment: exports that real runtimes load as they are (.keras, SavedModel for TF
Serving, TFLite with MediaPipe metadata), the predictors that run them, parity, model card.

    path = export_model(load_run("runs/pets"), "tflite", "exports/", quantize="fp16")
    predict = load_predictor(path)
"""

from transferkit.core.lazy import lazy_package

__all__ = lazy_package(__name__, {
    **dict.fromkeys(("ALL", "FORMATS", "INPUT_SPEC", "QUANTIZE", "artifact_name",
                     "export_model", "export_plan", "representative_images",
                     "tflite_bytes"), "transferkit.deploy.export"),
    **dict.fromkeys(("artifact_format", "check_parity", "format_parity",
                     "raise_on_mismatch", "size_bytes"), "transferkit.deploy.parity"),
    **dict.fromkeys(("load_predictor", "tflite_interpreter"),
                    "transferkit.deploy.predictors"),
    **dict.fromkeys(("BYTES_INPUT", "BYTES_SIGNATURE", "FLOAT_SIGNATURE",
                     "serving_archive"), "transferkit.deploy.serving")})
