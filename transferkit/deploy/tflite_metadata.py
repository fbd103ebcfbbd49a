"""TFLite model metadata, so MediaPipe Tasks (and other LiteRT clients) load an exported
.tflite as it is: no labels file, no preprocessing settings to pass by hand.

    content = export_metadata(tflite_bytes, task.tflite_output(class_names), meta)
    content = with_metadata(tflite_bytes, name="pets", output=TfliteOutput(...))

What a file gets, as MediaPipe's own metadata writer writes it (metadata_schema.fbs,
the `TFLITE_METADATA` entry of the Model, a flatbuffer with file identifier "M001"):
the model's name, description, version and author; the input image tensor (RGB,
normalisation mean 0 / std 1 since transferkit models take RGB 0-255 floats and
normalise inside the graph, value range 0-255, the size it was trained at); the output
tensor as the task describes it (`Task.tflite_output`: scores with a labels file of type
TENSOR_AXIS_LABELS, or a segmentation mask; a detector's four outputs as MediaPipe's
ObjectDetector writer describes them, `_detection_outputs`); with a novelty score, the
second output `novelty` with its threshold (`_novelty_output`); and the associated files
zip-appended to the model (ZIP_STORED, as tflite-support's MetadataPopulator does): the
labels and `transferkit.json` (the export's metadata: task, class names, input,
version, novelty).

Written with the FlatBuffers object API of two generated schemas: the metadata schema
(vendored from the mediapipe wheel, `_vendor`) and TensorFlow's model schema.
"""

import io
import json
import os
import zipfile
from importlib import metadata as distribution

import flatbuffers
from tensorflow.lite.python import schema_py_generated as model_fb

from transferkit.core.errors import TransferkitError
from transferkit.deploy._vendor import metadata_schema_py_generated as meta_fb
from transferkit.models.bundle import LABELS_NAME
from transferkit.models.saving import METADATA_NAME as JSON_FILE
from transferkit.tasks.outputs import DETECTION_METADATA_NAMES, DETECTION_OUTPUTS


METADATA_NAME = "TFLITE_METADATA"  # the Model.metadata entry clients look for
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
LABELS_FILE = LABELS_NAME  # the bundle's names (`models.bundle`), inside the file too
NOVELTY_LABELS_FILE = "novelty_labels.txt"
NOVELTY_LABEL = "unknown"  # the one "class" of the novelty output
NOVELTY_OUTPUT = "novelty"  # its name in the model's signature


# min_parser_version, as the real populator records it: the newest schema version among
# the fields written (metadata_schema.fbs history). Every field written here is a 1.0.0
# one (no subgraph process units, file versions or custom metadata), except output
# tensor groups (1.2.0), which a detector's metadata has, as MediaPipe's writer's does.
MIN_PARSER_VERSION = "1.0.0"
GROUPS_PARSER_VERSION = "1.2.0"
DETECTION_GROUP = "detection_result"  # MediaPipe's writer's name for the group
# Where each BOUNDARIES element (left, top, right, bottom) sits in a location row: the
# boxes are xmin, ymin, xmax, ymax (MediaPipe's writer, for TFLite's detection
# post-processing op, writes (1, 0, 3, 2): ymin first).
XYXY_INDEX = (0, 1, 2, 3)


def export_metadata(content, output, meta, novelty=None):
    """`content` with the metadata of a transferkit export: `meta` is the export's
    metadata dict (task, class names, input, source, ...; written in as
    `transferkit.json`, all but its "source" path), output the task's TfliteOutput,
    novelty the model's `Novelty` (its second output) or None. The name is the run's
    folder (a run's model.keras) or the source file's name; the version transferkit's."""
    version = transferkit_version()
    source = os.path.abspath(meta["source"]) if meta.get("source") else ""
    name = os.path.splitext(os.path.basename(source))[0]
    if name == "model":  # a run directory's model.keras: the run's name says more
        name = os.path.basename(os.path.dirname(source))
    input_size = "x".join(str(meta.get("input", {}).get(k, "?")) for k in ("height", "width"))
    return with_metadata(
        content, name=name or "transferkit model", output=output, version=version,
        description=f"{meta.get('task', '')} model exported by transferkit {version}, "
                    f"trained at {input_size}. Takes RGB 0-255 images.",
        # The source's path stays out: the file travels to devices, the path is local.
        extra={**{k: v for k, v in meta.items() if k != "source"},
               "transferkit_version": version}, novelty=novelty)


def transferkit_version():
    """The installed transferkit's version ("" when it is not installed)."""
    try:
        return distribution.version("transferkit")
    except distribution.PackageNotFoundError:
        return ""


def with_metadata(content, *, name, output, version="", description="", author="transferkit",
                  extra=None, novelty=None):
    """`content` (a .tflite flatbuffer, bytes) with model metadata and associated files.

    output: a TfliteOutput (the task's); for kind "detections" the model has the four
        outputs of `DETECTION_OUTPUTS`, named so in its signature, which end up in
        that order, described as MediaPipe's ObjectDetector reads them.
        version: the model's version string.
    extra: JSON-able dict written into the model as `transferkit.json` (default none).
    novelty: the model's novelty score (an `models.novelty.Novelty`: its detector,
        threshold, false_rejection), whose values are the model's second output
        [B, 1]; None (default): the model has one output.
    Raises TransferkitError if the model is not one image in, one tensor out (two with
    `novelty`, four "detections").
    """
    model = model_fb.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    detections = output.kind == "detections"
    outputs = len(DETECTION_OUTPUTS) if detections else 1 if novelty is None else 2
    if len(model.subgraphs) != 1 or len(graph.inputs) != 1 or len(graph.outputs) != outputs:
        raise TransferkitError(
            f"TFLite metadata needs a model with one subgraph, one input and {outputs} "
            f"output(s); this one has {len(model.subgraphs)} subgraph(s), "
            f"{len(graph.inputs)} input(s) and {len(graph.outputs)} output(s).")
    if detections:
        _in_order(model, DETECTION_OUTPUTS)
    elif novelty is not None:
        _novelty_last(model)
    image = graph.tensors[graph.inputs[0]]
    shape = [int(s) for s in image.shape]
    if len(shape) != 4 or shape[-1] != 3 or image.type not in (
            model_fb.TensorType.FLOAT32, model_fb.TensorType.UINT8):
        dtype = {v: k for k, v in vars(model_fb.TensorType).items()}.get(image.type)
        raise TransferkitError(f"TFLite metadata needs an RGB image input [1, H, W, 3] of "
                               f"float32 or uint8; this model's input has shape {shape} "
                               f"and type {dtype}.")
    files = {}
    if output.labels is not None:
        files[LABELS_FILE] = "".join(f"{label}\n" for label in output.labels).encode()
    if novelty is not None:
        files[NOVELTY_LABELS_FILE] = f"{NOVELTY_LABEL}\n".encode()
    if extra is not None:
        files[JSON_FILE] = json.dumps(extra, indent=2).encode()

    metadata = meta_fb.ModelMetadataT()
    metadata.name = name
    metadata.description = description
    metadata.version = version
    metadata.author = author
    sub = meta_fb.SubGraphMetadataT()
    sub.inputTensorMetadata = [_image_input(shape[1], shape[2], image.type)]
    if detections:
        sub.outputTensorMetadata = _detection_outputs(output)
        group = meta_fb.TensorGroupT()
        # Location, category and score, one element each per detection (not the count).
        group.name = DETECTION_GROUP
        group.tensorNames = list(DETECTION_METADATA_NAMES[:3])
        sub.outputTensorGroups = [group]
    else:
        sub.outputTensorMetadata = [_output(output)]
    if novelty is not None:
        sub.outputTensorMetadata.append(_novelty_output(novelty))
    metadata.subgraphMetadata = [sub]
    if extra is not None:
        metadata.associatedFiles = [_file(JSON_FILE, "The export's metadata (JSON): task, "
                                          "class names, input size, version.",
                                          meta_fb.AssociatedFileType.DESCRIPTIONS)]
    metadata.minParserVersion = GROUPS_PARSER_VERSION if detections else MIN_PARSER_VERSION

    builder = flatbuffers.Builder(0)
    builder.Finish(metadata.Pack(builder), METADATA_IDENTIFIER)
    _set_metadata(model, bytes(builder.Output()))
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    return _append_files(bytes(builder.Output()), files)


def read_metadata(content):
    """The ModelMetadataT of a .tflite's `TFLITE_METADATA` entry, or None."""
    model = model_fb.Model.GetRootAs(bytearray(content), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            if not meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0):
                raise TransferkitError(f"The {METADATA_NAME} entry of this .tflite is "
                                       f"not a metadata flatbuffer ({METADATA_IDENTIFIER!r}).")
            return meta_fb.ModelMetadataT.InitFromPackedBuf(bytearray(data), 0)
    return None


def _image_input(height, width, dtype):
    tensor = meta_fb.TensorMetadataT()
    tensor.name = "image"
    tensor.description = (f"RGB image, {height}x{width} (the size the model was trained "
                           "at; it resizes other sizes inside), values 0-255: the model "
                           "normalises inside its graph.")
    props = meta_fb.ImagePropertiesT()
    props.colorSpace = meta_fb.ColorSpaceType.RGB
    props.defaultSize = meta_fb.ImageSizeT()
    props.defaultSize.width, props.defaultSize.height = int(width), int(height)
    tensor.content = _content(meta_fb.ContentProperties.ImageProperties, props)
    # Identity normalisation: MediaPipe feeds float models (x - mean) / std, and
    # transferkit models want the raw 0-255 values.
    norm = meta_fb.NormalizationOptionsT()
    norm.mean, norm.std = [0.0], [1.0]
    tensor.processUnits = [_process_unit(meta_fb.ProcessUnitOptions.NormalizationOptions,
                                         norm)]
    tensor.stats = _stats(0.0, 255.0)
    return tensor


def _output(output):
    tensor = meta_fb.TensorMetadataT()
    tensor.description = output.description
    if output.kind == "mask":
        # As MediaPipe's segmenter writer: a grayscale image per class, dims 1..2.
        tensor.name = "segmentation_masks"
        props = meta_fb.ImagePropertiesT()
        props.colorSpace = meta_fb.ColorSpaceType.GRAYSCALE
        tensor.content = _content(meta_fb.ContentProperties.ImageProperties, props)
        tensor.content.range = meta_fb.ValueRangeT()
        tensor.content.range.min, tensor.content.range.max = 1, 2
    else:
        tensor.name = "scores" if output.kind == "scores" else "values"
        tensor.content = _content(meta_fb.ContentProperties.FeatureProperties,
                                  meta_fb.FeaturePropertiesT())
    tensor.stats = _stats(0.0, 1.0) if output.kind == "scores" else meta_fb.StatsT()
    if output.labels is not None:
        tensor.associatedFiles = [_file(LABELS_FILE, "Class names, in output order.",
                                        meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS)]
    if output.score_threshold is not None and output.kind == "scores":
        threshold = meta_fb.ScoreThresholdingOptionsT()
        threshold.globalScoreThreshold = float(output.score_threshold)
        tensor.processUnits = [_process_unit(
            meta_fb.ProcessUnitOptions.ScoreThresholdingOptions, threshold)]
    return tensor


def _novelty_last(model):
    """Put the signature's NOVELTY_OUTPUT last among the graph's outputs, the model's
    own output first: the converter orders them as it likes, and MediaPipe's
    ImageClassifier reads output 0 as head 0 (the classes clients ask for), each
    further one as a further head. Raises TransferkitError without that output."""
    graph = model.subgraphs[0]
    index = _signature_outputs(model, (NOVELTY_OUTPUT,))[NOVELTY_OUTPUT]
    graph.outputs = [i for i in graph.outputs if i != index] + [index]


def _in_order(model, names):
    """Order the graph's outputs as `names` (its signature's output names): the
    converter orders them as it likes, and clients that take outputs by position
    (MediaPipe's defaults, `get_output_details()`) get the documented order."""
    found = _signature_outputs(model, names)
    model.subgraphs[0].outputs = [found[name] for name in names]


def _signature_outputs(model, names):
    """{name: tensor index} of the signature outputs `names`; TransferkitError if one
    is missing or not among the graph's outputs."""
    graph = model.subgraphs[0]
    found = {m.name.decode(): m.tensorIndex for sig in model.signatureDefs or []
             for m in sig.outputs or []}
    missing = [n for n in names if found.get(n) not in list(graph.outputs)]
    if missing:
        raise TransferkitError(f"This TFLite model needs signature outputs named "
                               f"{list(names)}; it has {sorted(found)}.")
    return {n: found[n] for n in names}


def _detection_outputs(output):
    """The four output tensors' metadata, as MediaPipe's ObjectDetector metadata writer
    (`create_for_models_with_nms`) writes them and its graph reads them: looked up by
    name; locations as BoundingBoxProperties (BOUNDARIES in RATIO coordinates, the
    order of XYXY_INDEX); the labels as the categories' TENSOR_VALUE_LABELS (a
    category value indexes them); the scores with no calibration and, as
    ScoreThresholdingOptions, the threshold MediaPipe reports detections from; each
    of the first three one element per detection (content range: dimension 2)."""
    location, category, score, count = (meta_fb.TensorMetadataT() for _ in range(4))
    for tensor, name in zip((location, category, score, count), DETECTION_METADATA_NAMES):
        tensor.name = name
    location.description = ("The boxes of the detections: xmin, ymin, xmax, ymax, "
                            "normalised to the image (0-1).")
    box = meta_fb.BoundingBoxPropertiesT()
    box.index = list(XYXY_INDEX)
    box.type = meta_fb.BoundingBoxType.BOUNDARIES
    box.coordinateType = meta_fb.CoordinateType.RATIO
    location.content = _content(meta_fb.ContentProperties.BoundingBoxProperties, box)
    category.description = ("The class of each detection: an index into the labels "
                            "file (0-based).")
    category.content = _content(meta_fb.ContentProperties.FeatureProperties,
                                meta_fb.FeaturePropertiesT())
    if output.labels is not None:
        category.associatedFiles = [_file(
            LABELS_FILE, "Class names, one per line: a category value is a line index.",
            meta_fb.AssociatedFileType.TENSOR_VALUE_LABELS)]
    score.description = output.description
    score.content = _content(meta_fb.ContentProperties.FeatureProperties,
                             meta_fb.FeaturePropertiesT())
    score.stats = _stats(0.0, 1.0)
    if output.score_threshold is not None:
        threshold = meta_fb.ScoreThresholdingOptionsT()
        threshold.globalScoreThreshold = float(output.score_threshold)
        score.processUnits = [_process_unit(
            meta_fb.ProcessUnitOptions.ScoreThresholdingOptions, threshold)]
    for tensor in (location, category, score):
        tensor.content.range = meta_fb.ValueRangeT()
        tensor.content.range.min = tensor.content.range.max = 2
        tensor.stats = tensor.stats or meta_fb.StatsT()
    count.description = "The number of detections: the rows of the others that hold one."
    count.content = _content(meta_fb.ContentProperties.FeatureProperties,
                             meta_fb.FeaturePropertiesT())
    count.stats = meta_fb.StatsT()
    return [location, category, score, count]


def _novelty_output(novelty):
    """The novelty output's metadata. The threshold is machine-readable as the tensor's
    ScoreThresholdingOptions: MediaPipe's ImageClassifier (and tflite-support's
    metadata extractor) read it per output tensor and report a head's category only
    when its score reaches it, so a plain MediaPipe client gets classification head 1
    with the category "unknown" exactly for the images above the threshold (ties
    aside), and no category otherwise. Stats would only describe a value range, and
    SubGraphMetadata.custom_metadata is a free-form flatbuffer no client parses.
    The threshold is also in the description and in transferkit.json ("novelty").
    For "msp" (1 - top probability) it is not also written as the class scores' own
    threshold (1 - threshold): MediaPipe would then drop every class of an unknown
    image, so head 0 would have no top-1 answer where `predict` has one."""
    tensor = meta_fb.TensorMetadataT()
    tensor.name = "novelty"
    tensor.description = (
        f"Novelty score ({novelty.detector}): higher is more unlike the training classes; "
        f"the image is unknown when above {novelty.threshold:.9g} (calibrated so "
        f"{novelty.false_rejection:.0%} of validation images are).")
    tensor.content = _content(meta_fb.ContentProperties.FeatureProperties,
                              meta_fb.FeaturePropertiesT())
    tensor.stats = meta_fb.StatsT()
    tensor.associatedFiles = [_file(NOVELTY_LABELS_FILE, "The novelty output's one label.",
                                    meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS)]
    threshold = meta_fb.ScoreThresholdingOptionsT()
    threshold.globalScoreThreshold = float(novelty.threshold)
    tensor.processUnits = [_process_unit(meta_fb.ProcessUnitOptions.ScoreThresholdingOptions,
                                         threshold)]
    return tensor


def _content(kind, props):
    content = meta_fb.ContentT()
    content.contentPropertiesType, content.contentProperties = kind, props
    return content


def _process_unit(kind, options):
    unit = meta_fb.ProcessUnitT()
    unit.optionsType, unit.options = kind, options
    return unit


def _stats(low, high):
    stats = meta_fb.StatsT()
    stats.min, stats.max = [float(low)], [float(high)]
    return stats


def _file(name, description, kind):
    entry = meta_fb.AssociatedFileT()
    entry.name, entry.description, entry.type = name, description, kind
    return entry


def _set_metadata(model, data):
    """Put `data` in the model's TFLITE_METADATA entry (replacing an earlier one)."""
    buffer = model_fb.BufferT()
    buffer.data = data
    model.buffers = model.buffers or []
    model.metadata = model.metadata or []
    for entry in model.metadata:
        if entry.name.decode() == METADATA_NAME:
            model.buffers[entry.buffer] = buffer
            return
    model.buffers.append(buffer)
    entry = model_fb.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)


def _append_files(content, files):
    """`content` with `files` ({name: bytes}) zip-appended: a zip reader finds them at
    the end, the TFLite runtime reads the flatbuffer at the start."""
    if not files:
        return content
    out = io.BytesIO(content)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()
