"""The model metadata written into every exported .tflite: read back with the generated
flatbuffer reader, the zip-appended files, and the model still runs as before."""

import importlib.util
import io
import json
import os
import warnings
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from transferkit.core.errors import TransferkitError
from transferkit.core.task_registry import get_task
from transferkit import deploy as ex
from transferkit.deploy import tflite_metadata as tm
from transferkit.deploy._vendor import metadata_schema_py_generated as meta_fb
from transferkit.evaluation.evaluate import load_run
from transferkit.models.builder import build_model
from transferkit.models.saving import save_model
from transferkit.tasks.outputs import TfliteOutput

CLASSES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """(LoadedModel, the .tflite bytes the converter wrote, without metadata)."""
    tmp = tmp_path_factory.mktemp("plain")
    model = build_model("tiny_test", 3, weights=None, input_shape=(32, 40))
    loaded = load_run(save_model(model, str(tmp / "model.keras"),
                                 metadata={"class_names": CLASSES, "image_size": [32, 40]}))
    loaded.model.export(str(tmp / "saved"), format="tf_saved_model", verbose=False)
    return loaded, ex.tflite_bytes(str(tmp / "saved"))


def _run(content, x):
    with warnings.catch_warnings():  # tf.lite.Interpreter's LiteRT notice
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=content)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _metadata_buffer(content):
    """The raw TFLITE_METADATA buffer, found with TF's generated model reader."""
    from tensorflow.lite.python import schema_py_generated as model_fb

    model = model_fb.Model.GetRootAs(bytearray(content), 0)
    names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
    assert names.count("TFLITE_METADATA") == 1
    entry = model.Metadata(names.index("TFLITE_METADATA"))
    return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()


def test_metadata_reads_back_and_the_model_runs_as_before(plain):
    loaded, content = plain
    output = get_task("multilabel").tflite_output(CLASSES, 3)
    written = tm.with_metadata(content, name="colours", version="9.9", output=output,
                               description="a test", extra={"task": "multilabel"})
    buf = _metadata_buffer(written)
    assert meta_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0)  # "M001"
    meta = meta_fb.ModelMetadata.GetRootAs(buf, 0)
    assert (meta.Name(), meta.Version(), meta.Description(), meta.MinParserVersion()) == (
        b"colours", b"9.9", b"a test", b"1.0.0")
    assert meta.SubgraphMetadataLength() == 1
    graph = meta.SubgraphMetadata(0)
    image = graph.InputTensorMetadata(0)
    # The input: RGB at the trained size (width 40, height 32), identity normalisation,
    # values 0-255 (transferkit models normalise inside the graph).
    assert image.Content().ContentPropertiesType() == meta_fb.ContentProperties.ImageProperties
    props = meta_fb.ImageProperties()
    props.Init(image.Content().ContentProperties().Bytes,
               image.Content().ContentProperties().Pos)
    assert props.ColorSpace() == meta_fb.ColorSpaceType.RGB
    assert (props.DefaultSize().Width(), props.DefaultSize().Height()) == (40, 32)
    unit = image.ProcessUnits(0)
    assert unit.OptionsType() == meta_fb.ProcessUnitOptions.NormalizationOptions
    norm = meta_fb.NormalizationOptions()
    norm.Init(unit.Options().Bytes, unit.Options().Pos)
    assert (norm.MeanAsNumpy().tolist(), norm.StdAsNumpy().tolist()) == ([0.0], [1.0])
    assert (image.Stats().Min(0), image.Stats().Max(0)) == (0.0, 255.0)
    # The output: scores with the labels file and the multilabel threshold.
    scores = graph.OutputTensorMetadata(0)
    labels = scores.AssociatedFiles(0)
    assert (labels.Name(), labels.Type()) == (
        b"labels.txt", meta_fb.AssociatedFileType.TENSOR_AXIS_LABELS)
    threshold = meta_fb.ScoreThresholdingOptions()
    threshold.Init(scores.ProcessUnits(0).Options().Bytes, scores.ProcessUnits(0).Options().Pos)
    assert threshold.GlobalScoreThreshold() == 0.5
    # The files, zip-appended and stored uncompressed.
    with zipfile.ZipFile(io.BytesIO(written)) as archive:
        assert archive.read("labels.txt").decode() == "blue\ngreen\nred\n"
        assert json.loads(archive.read("transferkit.json")) == {"task": "multilabel"}
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    # The flatbuffer still runs, exactly as the file without metadata.
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 40, 3)).astype("float32")
    np.testing.assert_array_equal(_run(written, x), _run(content, x))
    # Writing again replaces the entry and the files (one of each).
    again = tm.with_metadata(written, name="renamed", output=output)
    assert tm.read_metadata(again).name == b"renamed"  # _metadata_buffer: one entry
    assert _metadata_buffer(again) and zipfile.ZipFile(io.BytesIO(again)).namelist() == [
        "labels.txt"]


def test_export_puts_the_run_into_the_file(plain, tmp_path):
    loaded, _ = plain
    path = ex.export_model(loaded, "tflite", str(tmp_path / "out"), quantize="fp16")
    content = open(path, "rb").read()
    meta = tm.read_metadata(content)
    assert meta.version.decode() == tm.transferkit_version()
    assert b"multiclass" in meta.description and b"32x40" in meta.description
    with zipfile.ZipFile(path) as archive:
        inside = json.loads(archive.read("transferkit.json"))
        assert archive.read("labels.txt").decode() == "blue\ngreen\nred\n"
    assert inside["class_names"] == CLASSES and inside["task"] == "multiclass"
    assert inside["input"] == {"height": 32, "width": 40, "channels": 3}
    assert inside["quantize"] == "fp16" and "source" not in inside  # a local path
    # labels.txt stays beside the file too.
    assert open(os.path.join(tmp_path, "out", "labels.txt")).read() == "blue\ngreen\nred\n"


def test_each_task_describes_its_output():
    binary = get_task("binary").tflite_output(["cat", "dog"], 1)
    assert (binary.kind, binary.labels) == ("scores", ("dog",))  # one unit, one label
    assert "'cat'" in binary.description
    multiclass = get_task("multiclass").tflite_output(["a", "b", "c"], 3)
    assert (multiclass.labels, multiclass.score_threshold) == (("a", "b", "c"), None)
    regression = get_task("regression").tflite_output([], 2)
    assert (regression.kind, regression.labels) == ("values", None)
    seg = get_task("segmentation")
    assert seg.tflite_output(["bg", "x", "y"], 3).labels == ("bg", "x", "y")
    # One sigmoid channel: MediaPipe reads it as one category's confidence.
    assert seg.tflite_output(["bg", "fg"], 1).labels == ("fg",)
    assert seg.tflite_output(["bg", "fg"], 1).kind == "mask"
    assert seg.tflite_output([], 1).labels == ("1",)  # no names saved: the index


def test_a_model_that_is_not_an_image_classifier_is_refused():
    inputs = tf.keras.Input((8,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))
    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    with pytest.raises(TransferkitError, match=r"RGB image input .* shape \[1, 8\] and type FLOAT32"):
        tm.with_metadata(content, name="x", output=TfliteOutput("values", "x"))


def test_the_vendored_schema_is_mediapipes():
    spec = importlib.util.find_spec("mediapipe")
    if spec is None:
        pytest.skip("mediapipe is not installed: nothing to compare the vendored copy with")
    installed = os.path.join(os.path.dirname(spec.origin), "tasks", "metadata",
                             "metadata_schema_py_generated.py")
    vendored = open(meta_fb.__file__).read()
    marker = "# --- vendored file starts below this line ---\n"
    assert vendored[vendored.index(marker) + len(marker):] == open(installed).read()


def test_a_detectors_metadata_is_what_mediapipes_object_detector_writer_writes(tmp_path):
    """The four outputs described field by field as MediaPipe's own writer for models
    with in-graph non-max suppression (`create_for_models_with_nms`) describes them,
    built from its metadata_info classes (its populator needs a compiled module the
    wheel lacks). Differences by design: the box order (xyxy here, its writer assumes
    TFLite's post-processing op, ymin first), descriptions, and the score threshold."""
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip("mediapipe is not installed: nothing to compare with")
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info as mp_info

    from transferkit.models.detection import build_detector
    from transferkit.tasks.outputs import DETECTION_OUTPUTS

    model = build_detector("tiny_test", 3, weights=None, input_shape=32, width=8)
    loaded = load_run(save_model(model, str(tmp_path / "model.keras"), metadata={
        "class_names": CLASSES, "image_size": 32, "task": "detection"}))
    content = open(ex.export_model(loaded, "tflite", str(tmp_path / "out")), "rb").read()
    ours = tm.read_metadata(content).subgraphMetadata[0]
    labels = mp_info.LabelFileMd(file_path=tm.LABELS_FILE)
    theirs = [md.create_metadata() for md in mp_info.DetectionOutputTensorsMd(
        bytearray(content), label_files=[labels]).output_mds]
    assert len(ours.outputTensorMetadata) == len(theirs) == 4
    for mine, want in zip(ours.outputTensorMetadata, theirs):
        assert mine.name.decode() == want.name  # what MediaPipe looks the tensors up by
        assert mine.content.contentPropertiesType == want.content.contentPropertiesType
        assert (mine.content.range is None) == (want.content.range is None)
        if want.content.range is not None:
            assert (mine.content.range.min, mine.content.range.max) == (
                want.content.range.min, want.content.range.max)
        assert [(f.name.decode(), f.type) for f in mine.associatedFiles or []] == [
            (f.name, f.type) for f in want.associatedFiles or []]
    box, want_box = (m.content.contentProperties for m in (ours.outputTensorMetadata[0],
                                                           theirs[0]))
    assert (box.type, box.coordinateType) == (want_box.type, want_box.coordinateType)
    assert list(box.index) == [0, 1, 2, 3] and list(want_box.index) == [1, 0, 3, 2]
    # The category labels: the class names, a TENSOR_VALUE_LABELS file in the zip.
    assert theirs[1].associatedFiles[0].type == meta_fb.AssociatedFileType.TENSOR_VALUE_LABELS
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.read(tm.LABELS_FILE).decode().split() == CLASSES
    # No score calibration; the score threshold MediaPipe's option overrides.
    units = ours.outputTensorMetadata[2].processUnits
    assert [u.optionsType for u in units] == [
        meta_fb.ProcessUnitOptions.ScoreThresholdingOptions]
    assert units[0].options.globalScoreThreshold == loaded.task.config.score_threshold
    (group,) = ours.outputTensorGroups
    assert (group.name, [n.decode() for n in group.tensorNames]) == (
        b"detection_result", [m.name for m in theirs[:3]])
    assert tm.read_metadata(content).minParserVersion == b"1.2.0"  # tensor groups
    # The graph's outputs are in that order (the signature names say which is which).
    from tensorflow.lite.python import schema_py_generated as model_fb

    graph_model = model_fb.ModelT.InitFromPackedBuf(bytearray(content), 0)
    by_name = {m.name.decode(): m.tensorIndex for m in graph_model.signatureDefs[0].outputs}
    assert list(graph_model.subgraphs[0].outputs) == [by_name[n] for n in DETECTION_OUTPUTS]
