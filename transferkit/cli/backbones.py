"""`transferkit backbones`: the registry, with sizes, features and preprocessing."""

from transferkit.cli.common import command
from transferkit.models.backbones import create_backbone
from transferkit.models.registry import get_spec, list_backbones

EPILOG = """examples:
  transferkit backbones
  transferkit backbones 'efficientnet*'
  transferkit backbones mobilenet_v2 --params
"""


def register(sub):
    p = command(sub, "backbones", "List registered backbones: default size, parameters, "
                "preprocessing.", EPILOG)
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name filter")
    p.add_argument("--params", action="store_true",
                   help="build each backbone to count its parameters (slower)")
    p.set_defaults(func=run)


def run(args):
    print(f"{'name':<22}{'size':>6}{'min':>6}{'features':>10}{'params':>14}  preprocessing")
    for name in list_backbones(args.pattern):
        spec = get_spec(name)
        params = "-"
        if args.params:
            params = f"{create_backbone(name, weights=None).count_params():,}"
        print(f"{name:<22}{spec.default_size:>6}{spec.min_size:>6}{spec.feature_size:>10}"
              f"{params:>14}  {spec.preprocessing}")
