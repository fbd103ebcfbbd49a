"""`create_backbone`: a registered backbone without its classifier, with its weights.

Weights come from Keras's own download-and-cache path (`weights="imagenet"`, so a
pre-filled `~/.keras/models` works offline), a local weights file, or the backbone of
a saved `.keras` model (loaded in safe mode unless the caller says it is trusted).
"""

import os
import re

import keras

from transferkit.core.compat import TRUSTED, renamed
from transferkit.core.errors import ConfigError, WeightsError
from transferkit.models.registry import get_spec
from transferkit.models.saving import archive_members, load_model


@renamed(**TRUSTED)
def create_backbone(name, *, weights=None, input_shape=None, safe_mode=True, **kwargs):
    """Build backbone `name` without its classifier, as a `keras.Model` named "backbone".

    weights: None (random init, default), "imagenet" (Keras's own download and cache,
        so a pre-filled `~/.keras/models` works offline), the path to a weights file
        (`.weights.h5` or Keras's `.h5`), or a saved `.keras` model whose backbone is
        taken over (loaded with Keras `safe_mode` on unless `safe_mode=False`).
    input_shape: (height, width, 3); default: the spec's square default size.
    kwargs: passed to the constructor, e.g. `alpha=0.35` for MobileNets; one it does
        not take raises ConfigError naming the ones it does (`spec.accepted_kwargs()`).
    """
    spec = get_spec(name)
    spec.check_kwargs(kwargs)  # before anything is built: unknown ones are refused
    if input_shape is None:
        input_shape = (spec.default_size, spec.default_size, 3)
    input_shape = tuple(input_shape)
    for side in input_shape[:2]:
        if side is not None and side < spec.min_size:
            raise ConfigError(
                f"Backbone {spec.name!r} needs inputs of at least {spec.min_size}x"
                f"{spec.min_size} pixels. Received: input_shape={input_shape}"
            )
    kwargs = {**dict(spec.kwargs), **kwargs}
    weights = None if weights in (None, "none", "None") else weights
    if weights == "imagenet":
        model = _build_imagenet(spec, input_shape, kwargs)
    else:
        model = spec.constructor(
            include_top=False, weights=None, input_shape=input_shape, **kwargs
        )
        if weights is not None:
            _load_local_weights(model, spec, str(weights), safe_mode)
    model.name = "backbone"
    return model


def imagenet_cache_dir():
    """The folder where Keras keeps downloaded weights (`$KERAS_HOME/models`)."""
    try:  # Keras resolves KERAS_HOME once, at import; ask it rather than guess.
        from keras.src.backend.config import keras_home

        home = keras_home()
    except ImportError:  # pragma: no cover - a Keras layout change
        home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):  # the same fallback keras.utils.get_file takes
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "models")


def _build_imagenet(spec, input_shape, kwargs):
    if not spec.imagenet:
        raise WeightsError(
            f"Backbone {spec.name!r} has no ImageNet weights. The `weights` argument "
            "should be None or the path to a weights file or a saved .keras model. "
            "Received: weights='imagenet'"
        )
    try:
        return spec.constructor(
            include_top=False, weights="imagenet", input_shape=input_shape, **kwargs
        )
    except Exception as error:  # Keras raises a bare Exception on a failed download.
        text = str(error)
        if "URL fetch failure" not in text and "fetch" not in text.lower():
            raise
        url = re.search(r"https?://\S+?(?=:\s|$)", text)
        file_name = os.path.basename(url.group(0)) if url else "(see the URL above)"
        raise WeightsError(
            f"ImageNet weights for backbone {spec.name!r} are not in the Keras cache and "
            f"could not be downloaded.\n  file: {file_name}\n  Keras looks for it at: "
            f"{os.path.join(imagenet_cache_dir(), file_name)}\n  Either copy that file "
            "there (set KERAS_HOME to use another cache), or pass a local file: "
            "weights='/path/to/weights.h5' (or --weights PATH on the command line), or "
            f"weights=None to train from scratch.\n  Keras said: {text}"
        ) from error


def check_weights_path(path):
    """Raise WeightsError unless `path` (a `weights` value other than None/"imagenet")
    is an existing file in the format its name says: a .keras archive holding a
    model's config and weights, or an HDF5 file (.h5, .weights.h5). Reads its header
    only (no TensorFlow), so callers check it before any slow work: a damaged file is
    named before the scan, not found when the model is built."""
    problem = None if os.path.isfile(path) else "no such file"
    if problem is None:
        problem = _weights_file_problem(path)
    if problem is not None:
        raise WeightsError(
            "The `weights` argument should be either None, 'imagenet', or the path to a "
            "weights file (.weights.h5, .h5) or a saved model (.keras) to be loaded. "
            f"Received: weights={path!r} ({problem})"
        )


def _weights_file_problem(path):
    """Why `path` is not the weights file its name says, or None."""
    import zipfile

    if path.endswith(".keras"):
        config, weights = archive_members()
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as error:
            return f"not a Keras .keras archive: {error}"
        missing = ([] if config in names else [config]) + (
            [] if names & set(weights) else [" or ".join(weights)])
        return (f"not a Keras .keras archive: it lacks {', '.join(missing)}" if missing
                else None)
    if path.endswith(".h5"):
        import h5py

        try:
            return None if h5py.is_hdf5(path) else "not an HDF5 weights file"
        except OSError as error:
            return f"could not be read: {error}"
    return None  # another suffix: Keras decides when it loads the file


def _load_local_weights(model, spec, path, safe_mode):
    check_weights_path(path)
    if path.endswith(".keras"):
        source = _backbone_of_saved_model(path, safe_mode)
        try:
            model.set_weights(source.get_weights())
        except ValueError as error:
            raise WeightsError(
                f"The backbone saved in {path} does not match backbone {spec.name!r}: "
                f"{error}. Pass the backbone name that model was built with."
            ) from error
        return
    try:
        model.load_weights(path)
    except Exception as error:
        raise WeightsError(
            f"Could not load weights file {path} into backbone {spec.name!r}: {error}"
        ) from error


def _backbone_of_saved_model(path, safe_mode):
    saved = load_model(path, safe_mode=safe_mode, compile=False)
    # A run's model, or one a wrapper holds (a run that kept flip TTA saves its model
    # inside `with_tta`'s layers).
    for model in (saved, *(l for l in saved.layers if isinstance(l, keras.Model))):
        try:
            return model.get_layer("backbone")
        except ValueError:
            continue
    return saved  # a bare backbone saved on its own
