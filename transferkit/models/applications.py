"""Every Keras Applications family, registered from one table.

Sizes are Keras's own `default_size`/`min_size`; feature sizes and block patterns were
read off the built models (tests check both against every registered backbone).
"""

import keras

from transferkit.models.registry import BackboneSpec, register_backbone

_A = keras.applications
_VGG, _RESNET = r"^(block\d+)_", r"^(conv\d+_block\d+)_"
_DENSE, _EFF = r"^(conv\d+_block\d+|pool\d+)_", r"^(block\d+[a-z])_"
_CONVNEXT = r"_(stage_\d+_block_\d+|downsampling_block_\d+)"
_ROWS = [
    # name, constructor, default size, min size, preprocessing, features, blocks, family
    ("vgg16", _A.VGG16, 224, 32, "caffe", 512, _VGG, "vgg"),
    ("vgg19", _A.VGG19, 224, 32, "caffe", 512, _VGG, "vgg"),
    ("resnet50", _A.ResNet50, 224, 32, "caffe", 2048, _RESNET, "resnet"),
    ("resnet101", _A.ResNet101, 224, 32, "caffe", 2048, _RESNET, "resnet"),
    ("resnet152", _A.ResNet152, 224, 32, "caffe", 2048, _RESNET, "resnet"),
    ("resnet50_v2", _A.ResNet50V2, 224, 32, "tf", 2048, _RESNET, "resnet_v2"),
    ("resnet101_v2", _A.ResNet101V2, 224, 32, "tf", 2048, _RESNET, "resnet_v2"),
    ("resnet152_v2", _A.ResNet152V2, 224, 32, "tf", 2048, _RESNET, "resnet_v2"),
    ("inception_v3", _A.InceptionV3, 299, 75, "tf", 2048, r"^mixed\d+$", "inception"),
    ("inception_resnet_v2", _A.InceptionResNetV2, 299, 75, "tf", 1536,
     r"^(mixed_\d[a-z]|block\d+_\d+_ac)$", "inception_resnet"),
    ("xception", _A.Xception, 299, 71, "tf", 2048, _VGG, "xception"),
    ("mobilenet", _A.MobileNet, 224, 32, "tf", 1024, r"^conv_(?:dw|pw)_(\d+)", "mobilenet"),
    ("mobilenet_v2", _A.MobileNetV2, 224, 32, "tf", 1280, r"^(expanded_conv|block_\d+)_",
     "mobilenet_v2"),
    ("mobilenet_v3_small", _A.MobileNetV3Small, 224, 32, "none", 576,
     r"^(expanded_conv(?:_\d+)?)_", "mobilenet_v3"),
    ("mobilenet_v3_large", _A.MobileNetV3Large, 224, 32, "none", 960,
     r"^(expanded_conv(?:_\d+)?)_", "mobilenet_v3"),
    ("densenet121", _A.DenseNet121, 224, 32, "torch", 1024, _DENSE, "densenet"),
    ("densenet169", _A.DenseNet169, 224, 32, "torch", 1664, _DENSE, "densenet"),
    ("densenet201", _A.DenseNet201, 224, 32, "torch", 1920, _DENSE, "densenet"),
    ("nasnet_mobile", _A.NASNetMobile, 224, 32, "tf", 1056,
     r"^(normal_concat_\d+|reduction_concat_\w+)$", "nasnet"),
    ("nasnet_large", _A.NASNetLarge, 331, 32, "tf", 4032,
     r"^(normal_concat_\d+|reduction_concat_\w+)$", "nasnet"),
]
# EfficientNet's compound scaling sets a resolution per width/depth (Tan & Le, 2019);
# it normalises inside the network, so preprocessing here is "none".
for _i, (_size, _feat) in enumerate(
    [(224, 1280), (240, 1280), (260, 1408), (300, 1536), (380, 1792), (456, 2048),
     (528, 2304), (600, 2560)]
):
    _ROWS.append((f"efficientnet_b{_i}", getattr(_A, f"EfficientNetB{_i}"), _size, 32,
                  "none", _feat, _EFF, "efficientnet"))
for _v, _size, _feat in [("B0", 224, 1280), ("B1", 240, 1280), ("B2", 260, 1408),
                         ("B3", 300, 1536), ("S", 384, 1280), ("M", 480, 1280),
                         ("L", 480, 1280)]:
    _ROWS.append((f"efficientnet_v2_{_v.lower()}", getattr(_A, f"EfficientNetV2{_v}"),
                  _size, 32, "none", _feat, _EFF, "efficientnet_v2"))
for _v, _feat in [("Tiny", 768), ("Small", 768), ("Base", 1024), ("Large", 1536),
                  ("XLarge", 2048)]:
    _ROWS.append((f"convnext_{_v.lower()}", getattr(_A, f"ConvNeXt{_v}"), 224, 32,
                  "none", _feat, _CONVNEXT, "convnext"))

# U-Net skips at strides 2, 4, 8, 16 (the backbone's output is at 32), read off the
# built models: the last activation at each resolution (MobileNetV2's are the TF
# segmentation tutorial's, tensorflow.org/tutorials/images/segmentation).
_SKIPS = {
    "mobilenet_v2": ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
                     "block_13_expand_relu"),
    "resnet50": ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"),
    "efficientnet_b0": ("block2a_expand_activation", "block3a_expand_activation",
                        "block4a_expand_activation", "block6a_expand_activation"),
}
# Operations of each built backbone (`BackboneSpec.operations`, its build cost), read
# off the built models like the feature sizes (tests check them against every build).
_OPERATIONS = {
    "vgg16": 19, "vgg19": 22, "resnet50": 175, "resnet101": 345, "resnet152": 515,
    "resnet50_v2": 190, "resnet101_v2": 377, "resnet152_v2": 564, "inception_v3": 311,
    "inception_resnet_v2": 780, "xception": 132, "mobilenet": 86, "mobilenet_v2": 154,
    "mobilenet_v3_small": 175, "mobilenet_v3_large": 203, "densenet121": 427,
    "densenet169": 595, "densenet201": 707, "nasnet_mobile": 769, "nasnet_large": 1039,
    "efficientnet_b0": 237, "efficientnet_b1": 339, "efficientnet_b2": 339,
    "efficientnet_b3": 384, "efficientnet_b4": 474, "efficientnet_b5": 576,
    "efficientnet_b6": 666, "efficientnet_b7": 813, "efficientnet_v2_b0": 270,
    "efficientnet_v2_b1": 334, "efficientnet_v2_b2": 349, "efficientnet_v2_b3": 409,
    "efficientnet_v2_s": 513, "efficientnet_v2_m": 740, "efficientnet_v2_l": 1028,
    "convnext_tiny": 151, "convnext_small": 295, "convnext_base": 295,
    "convnext_large": 295, "convnext_xlarge": 295,
}
_END_MARKED = {"inception", "inception_resnet", "nasnet"}
for _name, _ctor, _size, _min, _prep, _feat, _blocks, _family in _ROWS:
    register_backbone(BackboneSpec(
        name=_name, constructor=_ctor, default_size=_size, min_size=_min,
        preprocessing=_prep, feature_size=_feat, block_pattern=_blocks, family=_family,
        block_boundary="end" if _family in _END_MARKED else "start", tags=("keras",),
        skips=_SKIPS.get(_name, ()), operations=_OPERATIONS[_name],
    ))


