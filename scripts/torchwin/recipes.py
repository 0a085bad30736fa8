"""Find recipes and render their variants with the real engine (py-rattler-build).

Every engine call for rendering lives here. The result is a list of `Variant`
records: the one currency the rest of the tooling (build, CI matrix, docs,
solver tests) works with. The variant matrix itself lives only in each
recipe's `variants.yaml`, where `conda build` and `rattler-build` find it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torchwin.checkout import require_repo_root
from torchwin.errors import UserError

PLATFORMS = ("linux-64", "win-64")
RECIPE_FILE = "recipe.yaml"
VARIANTS_FILE = "variants.yaml"

# Variant keys that only carry a release's facts (its commit, supported
# versions); they make the table noisy and say nothing a reader picks.
FACT_KEY_PREFIXES = ("pytorch_commit", "pytorch_cuda_", "pytorch_python_", "pytorch_patches",
                     "pytorch_nightly_base", "cuda_build_offset")


def all_recipe_dirs() -> list[Path]:
    root = require_repo_root() / "recipes"
    return sorted(p for p in root.iterdir() if (p / RECIPE_FILE).is_file())


def find_recipes(paths) -> list[Path]:
    """Resolve RECIPE_DIR arguments; none means every recipe in the checkout."""
    if not paths:
        return all_recipe_dirs()
    found = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == RECIPE_FILE:
            path = path.parent
        if not path.is_dir():
            raise UserError("%s: no such recipe folder" % raw)
        if not (path / RECIPE_FILE).is_file():
            raise UserError("%s: no %s in this folder (a v1 recipe is expected)" % (raw, RECIPE_FILE))
        found.append(path.resolve())
    return found


def check_platform(value: str) -> list[str]:
    """`all` or one known platform; anything else is bad input."""
    if value == "all":
        return list(PLATFORMS)
    if value not in PLATFORMS:
        raise UserError("unknown target platform %r; allowed: %s, all" % (value, ", ".join(PLATFORMS)))
    return [value]


def host_platform() -> str:
    import sys

    return "win-64" if sys.platform == "win32" else "linux-64"


@dataclass
class Variant:
    """One rendered package of one recipe for one platform."""

    recipe: str
    recipe_dir: Path
    name: str
    version: str
    build_string: str
    build_number: int
    subdir: str
    target_platform: str
    noarch: str | None
    variant: dict
    depends: list
    constrains: list
    track_features: list
    build_requirements: list = field(default_factory=list)
    host_requirements: list = field(default_factory=list)
    run_exports: dict = field(default_factory=dict)  # {"strong": [...], "weak": [...]} of a build tool
    tests: list = field(default_factory=list)  # the rendered `tests:` section (the CI reruns its script test)
    rendered: object = field(default=None, repr=False, compare=False)

    @property
    def key(self):
        return (self.name, self.version, self.build_string, self.subdir)

    @property
    def filename_stem(self):
        return "%s-%s-%s" % (self.name, self.version, self.build_string)

    def chosen_values(self) -> dict:
        """The variant values a reader picks between (python, cuda, compiler...)."""
        return {k: v for k, v in sorted(self.variant.items())
                if k != "target_platform" and not k.startswith(FACT_KEY_PREFIXES)}

    def to_json(self) -> dict:
        return {
            "recipe": self.recipe,
            "name": self.name,
            "version": self.version,
            "build_string": self.build_string,
            "build_number": self.build_number,
            "subdir": self.subdir,
            "target_platform": self.target_platform,
            "noarch": self.noarch,
            "variant": {k: v for k, v in sorted(self.variant.items())},
            "depends": list(self.depends),
            "constrains": list(self.constrains),
            "track_features": list(self.track_features),
            # What the CI's stages are derived from: a recipe whose packages another needs builds first.
            "build_requirements": list(self.build_requirements),
            "host_requirements": list(self.host_requirements),
            "tests": list(self.tests),
        }


def _bump(version: str, parts: int) -> str:
    """The upper bound of a `x.x` pin: 1.0.1 with 2 parts -> 1.1."""
    pieces = [p for p in version.split(".")][:parts]
    while len(pieces) < parts:
        pieces.append("0")
    last = pieces[-1]
    digits = "".join(ch for ch in last if ch.isdigit()) or "0"
    pieces[-1] = str(int(digits) + 1)
    return ".".join(pieces)


def _spec_to_str(spec, pins) -> str:
    """Turn a rendered requirement (a string, or a pin_subpackage/pin_compatible map) into a match spec."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and len(spec) == 1:
        kind, args = next(iter(spec.items()))
        if kind in ("pin_subpackage", "pin_compatible"):
            name = args["name"]
            info = pins.get(name)
            if info is None:
                return name
            if args.get("exact"):
                return "%s ==%s %s" % (name, info.version, info.build_string or "*")
            parts = []
            lower = args.get("lower_bound")
            if lower:
                parts.append(">=" + info.version)
            upper = args.get("upper_bound")
            if isinstance(upper, str) and upper.startswith("x"):
                parts.append("<" + _bump(info.version, upper.count("x")))
            return ("%s %s" % (name, ",".join(parts))).strip()
    return str(spec)


def _track_features(name: str, build: dict) -> list:
    # v1 recipes spell track_features as `variant: down_prioritize_variant: N`;
    # the engine then writes N features named `<name>-p-<i>` into index.json.
    count = int((build.get("variant") or {}).get("down_prioritize_variant") or 0)
    return ["%s-p-%d" % (name, i) for i in range(count)]


def spec_matches(spec: str, name: str, version: str, build: str, subdir: str, build_number: int = 0) -> bool:
    """Does the match spec take this package, as the solver reads it (py-rattler's MatchSpec)?"""
    import rattler

    record = rattler.PackageRecord(name, rattler.VersionWithSource(version), rattler.BuildString(build),
                                   int(build_number or 0), rattler.Subdir(subdir))
    return rattler.MatchSpec(str(spec)).matches(record)


def load_variant_config(recipe_dir: Path, target_platform: str):
    """variants.yaml beside the recipe, with its selectors evaluated for `target_platform`."""
    from rattler_build import JinjaConfig, PlatformConfig, VariantConfig

    path = recipe_dir / VARIANTS_FILE
    if not path.is_file():
        return VariantConfig()
    try:
        return VariantConfig.from_file_with_context(
            path, JinjaConfig(platform=PlatformConfig(target_platform=target_platform)))
    except Exception as exc:  # the engine raises its own error types
        raise UserError("%s: %s" % (display_path(path), _first_line(exc))) from exc


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _first_line(exc) -> str:
    """The engine's message, shortened to what a person needs: the reason and the line."""
    import re

    text = str(exc).strip() or type(exc).__name__
    reason = re.search(r'(?:reason|message): "((?:[^"\\]|\\.)*)"', text)
    line = re.search(r"line: (\d+)", text)
    if reason:
        short = reason.group(1).replace('\\"', '"')
        return ("line %s: %s" % (line.group(1), short)) if line else short
    return text.splitlines()[0]


def _is_yyyymmdd(text) -> bool:
    """A real calendar date written YYYYMMDD (20191399 is not one)."""
    import datetime
    import re

    if not re.fullmatch(r"20\d{6}", text):
        return False
    try:
        datetime.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def check_environment(environ=None) -> None:
    """The recipe switches read from the environment, checked before the engine sees them."""
    import re

    environ = os.environ if environ is None else environ
    nightly = environ.get("TORCHWIN_NIGHTLY", "")
    if nightly and not _is_yyyymmdd(nightly):
        raise UserError("TORCHWIN_NIGHTLY=%s: expected a date as YYYYMMDD, e.g. 20190601" % nightly)
    base = environ.get("TORCHWIN_NIGHTLY_BASE", "")
    if base and not re.fullmatch(r"\d+\.\d+\.\d+", base):
        raise UserError("TORCHWIN_NIGHTLY_BASE=%s: expected a version X.Y.Z, e.g. 1.2.0" % base)
    source = environ.get("TORCHWIN_SOURCE_DIR", "")
    if source and not Path(source).is_dir():
        raise UserError("TORCHWIN_SOURCE_DIR=%s: no such folder (point it at a PyTorch checkout)" % source)


def load_recipe(recipe_dir: Path):
    from rattler_build import Stage0Recipe

    path = recipe_dir / RECIPE_FILE
    try:
        return Stage0Recipe.from_file(path)
    except Exception as exc:
        raise UserError("%s: %s" % (display_path(path), _first_line(exc))) from exc


def render_recipe(recipe_dir: Path, target_platform: str) -> list[Variant]:
    """All variants of one recipe for one platform, skipped combinations left out by the engine."""
    from rattler_build import PlatformConfig, RenderConfig

    stage0 = load_recipe(recipe_dir)
    config = load_variant_config(recipe_dir, target_platform)
    try:
        rendered = stage0.render(config, RenderConfig(platform=PlatformConfig(target_platform=target_platform)))
    except Exception as exc:
        raise UserError("%s: %s" % (display_path(recipe_dir / RECIPE_FILE), _first_line(exc))) from exc
    variants = []
    seen = set()
    for item in rendered:
        recipe = item.recipe
        build = recipe.build.to_dict()
        reqs = recipe.requirements.to_dict()
        pins = item.pin_subpackages
        noarch = build.get("noarch")
        variant = Variant(
            recipe=recipe_dir.name,
            recipe_dir=recipe_dir,
            name=recipe.package.name,
            version=str(recipe.package.version),
            build_string=str(recipe.build.string),
            build_number=int(build.get("number") or 0),
            subdir="noarch" if noarch else target_platform,
            target_platform=target_platform,
            noarch=noarch,
            variant=dict(item.variant),
            depends=[_spec_to_str(s, pins) for s in reqs.get("run", [])],
            constrains=[_spec_to_str(s, pins) for s in reqs.get("run_constraints", [])],
            track_features=_track_features(recipe.package.name, build),
            build_requirements=[_spec_to_str(s, pins) for s in reqs.get("build", [])],
            host_requirements=[_spec_to_str(s, pins) for s in reqs.get("host", [])],
            run_exports={kind: [_spec_to_str(s, pins) for s in specs]
                         for kind, specs in (reqs.get("run_exports") or {}).items() if isinstance(specs, list)},
            tests=list(recipe.to_dict().get("tests") or []),
            rendered=item,
        )
        if variant.key in seen:
            continue
        seen.add(variant.key)
        variants.append(variant)
    return variants


def render(recipe_dirs, platforms, overrides=None) -> list[Variant]:
    """Render every recipe for every platform, dedupe noarch outputs, apply --variant filters."""
    check_environment()
    out = []
    seen = set()
    for recipe_dir in recipe_dirs:
        for platform in platforms:
            for variant in render_recipe(recipe_dir, platform):
                if variant.key in seen:
                    continue
                seen.add(variant.key)
                out.append(variant)
    if overrides:
        out = select(out, overrides, recipe_dirs, platforms)
    return sorted(out, key=_sort_key)


def _version_key(text: str):
    return tuple(int(p) if p.isdigit() else -1 for p in text.replace(".dev", ".-1.").split("."))


def _sort_key(v: Variant):
    return (v.recipe, v.name, _version_key(v.version), v.subdir, v.build_string)


def parse_overrides(items) -> dict:
    """`KEY=VALUE` strings from the command line; a key given twice keeps every value."""
    overrides: dict = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UserError("--variant %r: expected KEY=VALUE, e.g. --variant cuda_compiler_version=9.0" % item)
        overrides.setdefault(key.strip(), []).append(value.strip())
    return overrides


def known_variant_values(recipe_dirs, platforms) -> dict:
    """Every key and value the recipes' variants.yaml files offer for these platforms."""
    known: dict = {}
    for recipe_dir in recipe_dirs:
        for platform in platforms:
            config = load_variant_config(recipe_dir, platform)
            for key in config.keys():
                values = known.setdefault(key, [])
                for value in config.get_values(key) or []:
                    if str(value) not in values:
                        values.append(str(value))
    return known


def select(variants, overrides, recipe_dirs, platforms) -> list[Variant]:
    """Keep the variants that have every KEY with one of its VALUEs; a variant without a KEY goes.

    A KEY no variant of the selected recipes has is bad input (a typo, or the wrong recipe), and
    so is a VALUE their variants.yaml does not offer.
    """
    known = known_variant_values(recipe_dirs, platforms)
    used: dict = {}
    for variant in variants:
        for key, value in variant.variant.items():
            if key != "target_platform":
                values = used.setdefault(key, [])
                if str(value) not in values:
                    values.append(str(value))
    for key, values in overrides.items():
        if key not in used:
            allowed = sorted(k for k in used if not k.startswith(FACT_KEY_PREFIXES))
            raise UserError("--variant %s: unknown key (no variant of %s has it); allowed: %s" % (
                key, ", ".join(display_path(d) for d in recipe_dirs), ", ".join(allowed) or "none"))
        offered = known.get(key) or used[key]
        for value in values:
            if value not in offered:
                raise UserError("--variant %s=%s: unknown value; allowed: %s" % (key, value, ", ".join(offered)))

    def keep(variant):
        return all(key in variant.variant and str(variant.variant[key]) in values
                   for key, values in overrides.items())

    return [v for v in variants if keep(v)]


def build_order(recipe_dirs, platforms) -> list[Path]:
    """Recipes sorted so that a recipe comes after those whose packages it needs to build."""
    produced = {}
    needs = {}
    for recipe_dir in recipe_dirs:
        names = set()
        wanted = set()
        for platform in platforms:
            for variant in render_recipe(recipe_dir, platform):
                names.add(variant.name)
                for spec in variant.build_requirements + variant.host_requirements:
                    wanted.add(spec.split()[0])
        for name in names:
            produced[name] = recipe_dir
        needs[recipe_dir] = wanted
    ordered: list[Path] = []
    visiting = set()

    def visit(recipe_dir):
        if recipe_dir in ordered:
            return
        if recipe_dir in visiting:
            raise UserError("recipes depend on each other in a cycle: %s" % recipe_dir.name)
        visiting.add(recipe_dir)
        for name in sorted(needs[recipe_dir]):
            dep = produced.get(name)
            if dep is not None and dep != recipe_dir:
                visit(dep)
        visiting.discard(recipe_dir)
        ordered.append(recipe_dir)

    for recipe_dir in recipe_dirs:
        visit(recipe_dir)
    return ordered
