"""``scaledet configs [NAME]``: the packaged training recipes."""
from __future__ import annotations

import json

from scaledet.cli.common import new_parser
from scaledet.errors import UsageError

EXAMPLE = """  scaledet configs
  scaledet configs retinanet_spinenet49s_coco > my_recipe.yaml   # a copy to edit
  scaledet train retinanet_spinenet49s_coco --output runs/49s --set data.root=/data/coco
"""


def add_parser(subparsers) -> None:
    p = new_parser(subparsers, "configs", "list the packaged configs, or print one", EXAMPLE)
    p.add_argument("name", nargs="?", help="a packaged config to print (default: list them all)")
    p.add_argument("--json", action="store_true", help="list as JSON: name, description, path")
    p.set_defaults(func=run)


def run(args) -> int:
    from scaledet.configs import list_configs, packaged_config_path

    if args.name:
        path = packaged_config_path(args.name)
        if path is None:
            names = ", ".join(c.name for c in list_configs())
            raise UsageError(f"no packaged config {args.name!r}; packaged: {names}")
        print(path.read_text(), end="")
        return 0
    configs = list_configs()
    if args.json:
        print(json.dumps([{"name": c.name, "description": c.description, "path": str(c.path)} for c in configs]))
        return 0
    width = max(len(c.name) for c in configs)
    for c in configs:
        print(f"{c.name:<{width}}  {c.description}")
    print("\nUse a name wherever a CONFIG is taken, e.g. scaledet train NAME --output runs/x "
          "(relative data paths are taken under data.root; see --set data.root=... or $SCALEDET_DATA_ROOT).")
    return 0
