"""`torchwin render`: show every variant the recipes produce, as a table or as JSON.

The JSON is what other tools read: the CI matrix, the README's matrix, the
solver tests. It comes straight from the engine's render of each recipe's
`variants.yaml`, so nothing about the matrix is typed twice.
"""

from __future__ import annotations

import json
import sys

from torchwin import recipes
from torchwin.errors import UserError

EPILOG = """\
examples:
  torchwin render                               every recipe, for this host's platform
  torchwin render recipes/pytorch --target-platform all
  torchwin render recipes/nvcc --target-platform win-64 --json
  torchwin render recipes/pytorch --variant cuda_compiler_version=9.0 --variant python=3.6
"""


def add_target_platform_argument(parser, default=None):
    parser.add_argument(
        "--target-platform", default=default or recipes.host_platform(), metavar="PLATFORM",
        help="win-64, linux-64 or all (default: this host, %(default)s)")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "render", help="list every variant of the recipes (table or --json)",
        description="Render recipes with py-rattler-build and list every package variant: name, version, "
                    "build string, platform and the variant values (python, CUDA, compiler).",
        epilog=EPILOG, formatter_class=_formatter())
    parser.add_argument("recipe_dirs", nargs="*", metavar="RECIPE_DIR",
                        help="recipe folders (default: every folder under recipes/)")
    add_target_platform_argument(parser)
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                        help="keep only variants with this value (repeatable)")
    parser.add_argument("--json", action="store_true", help="print a JSON list for other tools")
    parser.add_argument("--markdown", action="store_true",
                        help="print the pytorch matrix as the Markdown table README.md embeds (recipes/pytorch "
                             "only; not with --json)")
    parser.set_defaults(func=run)


def _formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def run(args) -> int:
    if args.json and args.markdown:
        raise UserError("--json and --markdown: give one (--json for tools, --markdown for README's matrix table)")
    platforms = recipes.check_platform(args.target_platform)
    recipe_dirs = recipes.find_recipes(args.recipe_dirs)
    overrides = recipes.parse_overrides(args.variant)
    variants = recipes.render(recipe_dirs, platforms, overrides)
    if args.markdown and not any(v.name == "pytorch" for v in variants):
        # The table tabulates pytorch releases; for any other recipe it would be an empty table.
        if any(d.name == "pytorch" for d in recipe_dirs):
            raise UserError("--markdown: no pytorch variant matches the --variant values (see `torchwin render "
                            "recipes/pytorch`)")
        raise UserError("--markdown: %s has no pytorch variants; the table is the pytorch matrix: allowed with "
                        "recipes/pytorch or no RECIPE_DIR (use the plain table or --json for other recipes)"
                        % ", ".join(recipes.display_path(d) for d in recipe_dirs))
    if args.markdown:
        sys.stdout.write(markdown_matrix(variants))
    elif args.json:
        json.dump([v.to_json() for v in variants], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(variants)
    return 0


def format_values(values: dict) -> str:
    return " ".join("%s=%s" % (k, v) for k, v in values.items())


def print_table(variants, out=None):
    out = out or sys.stdout
    rows = [("RECIPE", "PACKAGE", "VERSION", "BUILD", "SUBDIR", "VARIANT")]
    for v in variants:
        rows.append((v.recipe, v.name, v.version, v.build_string, v.subdir, format_values(v.chosen_values())))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join(cells + [row[-1]]).rstrip(), file=out)
    print("%d variant(s)" % len(variants), file=out)


def _cuda_label(cuda: str) -> str:
    return "CPU" if cuda == "None" else "CUDA " + cuda


def markdown_matrix(variants) -> str:
    """One row per release and platform: its Python versions and its builds, as README.md shows them."""
    rows = {}
    for v in variants:
        if v.name != "pytorch":
            continue
        row = rows.setdefault((recipes._version_key(v.version), v.version, v.subdir), (set(), set()))
        row[0].add(v.variant.get("python", "?"))
        row[1].add(v.variant.get("cuda_compiler_version", "None"))
    lines = ["| PyTorch | platform | Python | builds |", "|---|---|---|---|"]
    for (_, version, subdir), (pythons, cudas) in sorted(rows.items()):
        builds = sorted(cudas, key=lambda c: (c != "None", recipes._version_key(c) if c != "None" else ()))
        lines.append("| %s | %s | %s | %s |" % (version, subdir, ", ".join(sorted(pythons, key=recipes._version_key)),
                                             ", ".join(_cuda_label(c) for c in builds)))
    return "\n".join(lines) + "\n"
