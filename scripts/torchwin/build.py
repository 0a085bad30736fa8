"""`torchwin build`: build recipes with the engine, run their tests, index the results into a channel.

Recipes are built in dependency order, one variant at a time, into a staging
folder per recipe. A recipe's packages go into the channel together once all of
its variants built and passed their tests (through
`torchwin.channel.command.add_packages`, which locks and re-indexes it), or not at all:
a failed pytorch build must not leave a torchvision built on it. A variant whose host
requirements name another recipe's package (recipes/pytorch-cpu: `pytorch ==V *_cpu_*`) is
built only once this run or the local channel has a match, never left pointing at nothing.
A rebuild replaces the local channel's copies of the same file names (new
timestamps inside) and says how many it replaced.
A recipe that compiles code (it uses a compiler from variants.yaml) is only
built where the toolchain is: on other hosts it is rendered and reported as
skipped, with the reason and the command to run on a build machine.

Packages go into label main of the channel, unless their recipe keeps them in
another label with `extra: {torchwin: {label: L}}` (recipes/cuda-runtime:
label cuda-runtime); L must be a label of channel/channel.yaml (torchwin.channel.labels).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from torchwin import recipes
from torchwin.build_report import Progress, print_summary, say
from torchwin.channel.labels import channel_labels
from torchwin.errors import Failure, UserError
from torchwin.render import add_target_platform_argument

# Chosen from benchmarks/run.py (README "Performance"), packing a 695 MB torch on
# 2 cores: zstd 10 takes ~15 s and is 13% larger than zstd 19, which takes ~160 s
# (2 threads). Nightlies are rebuilt daily and pruned within days: speed wins.
# Releases are downloaded for years: size wins.
NIGHTLY_PACKAGE_FORMAT = "conda:10"
RELEASE_PACKAGE_FORMAT = "conda:19"


def default_package_format(environ=None) -> str:
    environ = os.environ if environ is None else environ
    return NIGHTLY_PACKAGE_FORMAT if environ.get("TORCHWIN_NIGHTLY") else RELEASE_PACKAGE_FORMAT


COMPILER_KEYS = ("c_compiler", "cxx_compiler", "cuda_compiler")

EPILOG = """\
examples:
  torchwin build                                  every recipe this host can build, into channel/local
  torchwin build recipes/nvcc --target-platform all
  torchwin build recipes/pytorch-select --channel-dir /tmp/chan
  torchwin build recipes/pytorch --variant cuda_compiler_version=9.0 --variant python=3.6 \\
      --channel defaults                          on a build machine with the toolchain

After a build, install from the local channel (defaults: for cudatoolkit), e.g.:
  conda install -c file:///path/to/channel/local -c defaults cuda90

A recipe whose `extra: torchwin: label: L` names a label of channel/channel.yaml
has its packages added to that label (channel/local/label/L/<subdir>/), e.g.
recipes/cuda-runtime's cudatoolkit and cudnn to label cuda-runtime:
  conda install -c file:///path/to/channel/local -c file:///path/to/channel/local/label/cuda-runtime cudnn
"""


@dataclass
class Outcome:
    variant: recipes.Variant
    result: str  # built, failed, skipped
    seconds: float = 0.0
    files: tuple = ()
    reason: str = ""
    hint: str = ""
    label: str = "main"  # the channel label its packages went into (or would have)
    short: str = ""  # a skip's reason without the details: what the summary groups by

    @property
    def size(self) -> int:
        return sum(Path(f).stat().st_size for f in self.files if Path(f).exists())


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "build", help="build recipes, run their tests, index into the local channel",
        description="Build recipes with py-rattler-build (every recipe in dependency order when none is "
                    "named), run each package's tests, and add what passed to a local conda channel.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe_dirs", nargs="*", metavar="RECIPE_DIR",
                        help="recipe folders (default: every folder under recipes/)")
    add_target_platform_argument(parser)
    parser.add_argument("--channel-dir", metavar="DIR", help="local channel to write (default: channel/local)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                        help="build only variants with this value (repeatable)")
    parser.add_argument("--channel", action="append", default=[], metavar="CHANNEL",
                        help="extra channel for build/host/test dependencies, e.g. conda-forge (repeatable)")
    parser.add_argument("--no-test", action="store_true", help="skip the recipes' package tests")
    parser.add_argument("--verbose", action="store_true",
                        help="a line per variant (skipped ones too) and the whole reason of each skip")
    parser.add_argument("--package-format", default=None, metavar="FORMAT",
                        help="conda[:LEVEL] or tar-bz2[:LEVEL] (default: %s for nightlies, i.e. when "
                             "TORCHWIN_NIGHTLY is set, else %s)" % (NIGHTLY_PACKAGE_FORMAT, RELEASE_PACKAGE_FORMAT))
    parser.set_defaults(func=run)


def run(args) -> int:
    from torchwin.channel import command as channel

    platforms = recipes.check_platform(args.target_platform)
    recipe_dirs = recipes.find_recipes(args.recipe_dirs)
    overrides = recipes.parse_overrides(args.variant)
    package_format = args.package_format or default_package_format()
    check_package_format(package_format)
    channel_dir = Path(args.channel_dir) if args.channel_dir else channel.default_channel_dir()
    check_channel_dir(channel_dir, "--channel-dir" if args.channel_dir else "the channel folder")
    # Named recipes too: a recipe must come after those whose packages it needs from the local channel.
    ordered = recipes.build_order(recipe_dirs, platforms)
    # render() sorts by recipe name; building needs the dependency order back.
    position = {recipe_dir: index for index, recipe_dir in enumerate(ordered)}
    rendered = sorted(recipes.render(ordered, platforms), key=lambda v: position[v.recipe_dir])
    elsewhere = other_platform_notes(ordered, platforms, rendered)
    variants = recipes.select(rendered, overrides, ordered, platforms) if overrides else rendered
    labels = channel_labels(variants)  # a label channel.yaml lacks stops the run before any build
    if not variants:
        raise UserError("nothing to build for %s: %s" % (
            ", ".join(platforms), "; ".join(elsewhere) or "no variant matches the --variant values "
                                                         "(see `torchwin render`)"))
    for note in elsewhere:
        say("note: %s" % note, sys.stdout)
    outcomes = build_variants(variants, channel_dir, extra_channels=args.channel, test=not args.no_test,
                              package_format=package_format, labels=labels, verbose=args.verbose)
    print_summary(outcomes, channel_dir, verbose=args.verbose, lines_and_note=install_lines)
    for note in elsewhere:
        print("", flush=True)
        say("not built: %s" % note, sys.stdout)
    return 1 if any(o.result == "failed" for o in outcomes) else 0


def check_channel_dir(channel_dir: Path, what: str) -> None:
    """The channel folder, or the first of its parents that exists, must be a folder: found before
    hours of building, not when the first package is added."""
    for path in (channel_dir, *channel_dir.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == channel_dir else "is inside %s, which is a file" % path
                raise UserError("%s %s: %s; give a folder (created when missing)" % (what, channel_dir, where))
            return


def other_platform_notes(recipe_dirs, platforms, rendered) -> list:
    """One line per recipe that has no variant for `platforms`, naming where it builds and how."""
    have = {v.recipe for v in rendered}
    notes = []
    for recipe_dir in recipe_dirs:
        if recipe_dir.name in have:
            continue
        others = [p for p in recipes.PLATFORMS if p not in platforms and recipes.render_recipe(recipe_dir, p)]
        where = ", ".join(others) or "no platform"
        hint = (" (torchwin build %s --target-platform %s)" % (recipes.display_path(recipe_dir), others[0])
                if others else "")
        notes.append("%s has no variant for %s; it builds for %s%s"
                     % (recipe_dir.name, ", ".join(platforms), where, hint))
    return notes


def check_package_format(value: str) -> None:
    kind, _, level = value.partition(":")
    ranges = {"conda": (-7, 22), "tar-bz2": (1, 9)}
    if kind not in ranges:
        raise UserError("--package-format %r: allowed: conda[:LEVEL] (-7..22) or tar-bz2[:LEVEL] (1..9)" % value)
    if level:
        low, high = ranges[kind]
        if not level.lstrip("-").isdigit() or not low <= int(level) <= high:
            raise UserError("--package-format %r: level must be a whole number from %d to %d" % (value, low, high))


def needs_toolchain(variant: recipes.Variant) -> bool:
    return any(key in variant.variant for key in COMPILER_KEYS)


def why_not_buildable(variant: recipes.Variant, extra_channels) -> str:
    """Empty when this host can build the variant, else the reason."""
    return "; ".join(full for _, full in skip_reasons(variant, extra_channels))


def skip_reasons(variant: recipes.Variant, extra_channels) -> list:
    """[(short, whole)] of what keeps this host from building the variant: the short form names the
    check (what the summary groups by), the whole one says what was found ([] when it can)."""
    missing = script_host_problem(variant)
    if missing:
        return [(missing.split(": ", 1)[0] if ": " in missing else missing, missing)]
    if not needs_toolchain(variant):
        return []
    host = recipes.host_platform()
    if variant.subdir not in (host, "noarch"):
        system = "Windows" if variant.subdir.startswith("win") else "Linux"
        return [("needs a %s build machine" % system, "compiling for %s needs a %s build machine (this host is %s)"
                 % (variant.subdir, system, host))]
    return toolchain_problems(variant, extra_channels)


def toolchain_problems(variant: recipes.Variant, extra_channels=()) -> list:
    """[(check, 'check: what was found')] that `torchwin doctor --channel ...` finds missing for this
    variant: its FAILs, and its channel check (a WARN there: conda build needs no --channel)."""
    from torchwin.doctor import command as doctor
    from torchwin.doctor.host_probes import CHANNEL_CHECK

    cuda = variant.variant.get("cuda_compiler_version", "None")
    cuda = "none" if cuda in ("None", None) else str(cuda)
    checks = doctor.run_checks(target_platform=variant.subdir, cuda=cuda, channels=list(extra_channels))
    return [("no --channel for python, numpy, mkl..." if c.name == CHANNEL_CHECK else c.name,
             "%s: %s" % (c.name, c.found)) for c in checks
            if c.status == "FAIL" or (c.name == CHANNEL_CHECK and c.status != "OK")]


def script_host_problem(variant: recipes.Variant) -> str:
    """What the variant's Python build script says this host lacks; "" when it says nothing.

    A recipe that packages files from an install on the build machine (recipes/cuda-runtime copies
    NVIDIA's libraries out of an installed CUDA toolkit) defines `host_problem(environ)` in its build
    script. It is asked here with the environment the build would give the script, so a host without
    that install reports the variant as skipped, in the script's own words, instead of failing it.
    """
    recipe = getattr(variant.rendered, "recipe", None)
    script = recipe.build.to_dict().get("script") if recipe is not None else None
    if not isinstance(script, dict) or script.get("interpreter") != "python" or not script.get("file"):
        return ""
    path = Path(variant.recipe_dir) / script["file"]
    environ = dict(script.get("env") or {}, target_platform=variant.target_platform,
                   RECIPE_DIR=str(variant.recipe_dir))
    try:
        check = getattr(_load_script(path), "host_problem", None)
        return str(check(environ) or "") if check else ""
    except Exception as exc:  # a broken recipe script is a failure, not a reason to skip
        raise Failure("%s: cannot check this host: %s" % (recipes.display_path(path), exc)) from exc


_scripts: dict = {}


def _load_script(path: Path):
    """The build script as a module (its `if __name__ == "__main__"` part does not run)."""
    import importlib.util

    if path not in _scripts:
        spec = importlib.util.spec_from_file_location("torchwin_recipe_script_%d" % len(_scripts), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _scripts[path] = module
    return _scripts[path]


def hint_values(variant: recipes.Variant) -> dict:
    """The variant values a person picks to build just this variant: no compilers, no key with a
    single value on its platform, and of each zip_keys group only the first key (the rest follow it)."""
    config = recipes.load_variant_config(Path(variant.recipe_dir), variant.target_platform)
    groups, values = [list(g) for g in (config.zip_keys or [])], config.to_dict()
    followers = {key for group in groups for key in group[1:]}
    return {k: v for k, v in variant.chosen_values().items()
            if k not in COMPILER_KEYS and k not in followers and len(set(map(str, values.get(k) or [v]))) > 1}


WITH_THE_REST = "built with the rest of recipes/%s on its build machine (see the lines above)"


def build_command_hint(variant: recipes.Variant) -> str:
    if variant.subdir == "noarch":
        return WITH_THE_REST % variant.recipe
    values = " ".join("--variant %s=%s" % (k, v) for k, v in hint_values(variant).items())
    if not needs_toolchain(variant):
        # Skipped by its build script's host check: no compiler or channel needed, only that install.
        return "where that is installed: torchwin build recipes/%s --target-platform %s %s" % (
            variant.recipe, variant.subdir, values)
    if variant.subdir.startswith("win"):
        return ("on Windows with VS2017 + CUDA: torchwin build recipes/%s --channel defaults %s "
                "(or conda build recipes/%s -m FILE, FILE from `torchwin ci variant-file`)"
                % (variant.recipe, values, variant.recipe))
    return "on a Linux build machine: torchwin build recipes/%s --target-platform %s --channel defaults %s" % (
        variant.recipe, variant.subdir, values)


def build_variants(variants, channel_dir: Path, extra_channels=(), test=True,
                   package_format=RELEASE_PACKAGE_FORMAT, out=None, labels=None, verbose=False) -> list:
    """Build each variant in order, a recipe's variants into one staging folder; when a recipe's
    last variant is done its packages go into the channel together, before the next recipe builds
    (which may need them), or, if one of its variants failed, none of them do.

    labels maps id(variant) to the channel label its packages go into (default: main).
    """
    out = out or sys.stdout
    progress = Progress(out, verbose)
    labels = labels or {}
    outcomes = []
    total = len(variants)
    staging = {}  # recipe_dir -> its staging folder; the engine also uses it as a channel for the recipe's
    #               later outputs
    reasons = {id(v): skip_reasons(v, extra_channels) for v in variants}
    made_here = {v.name: v.recipe for v in variants}
    # A recipe's script-only variants (torchvision 0.2.x, pure Python) go with its compiled ones:
    # build them only where at least one compiled variant can be built.
    compiled_ok = {}
    for v in variants:
        if needs_toolchain(v):
            compiled_ok[v.recipe] = compiled_ok.get(v.recipe, False) or not reasons[id(v)]
    for index, variant in enumerate(variants, 1):
        label = "[%d/%d] %s %s %s (%s)" % (index, total, variant.name, variant.version,
                                          variant.build_string, variant.subdir)
        problems = reasons[id(variant)]
        hint = None
        if not problems and compiled_ok.get(variant.recipe) is False:
            problems = [("goes with %s's compiled packages" % variant.recipe,
                         "it goes with %s's compiled packages, none of which this host can build" % variant.recipe)]
            hint = WITH_THE_REST % variant.recipe
        missing = [] if problems else unbuilt_requirements(variant, made_here, outcomes, channel_dir)
        if missing:  # as conda build, which cannot resolve it then: never made without what it names
            name = missing[0].split()[0]
            problems = [("its %s is not built" % name,
                         "it needs %s in host, and neither this run nor %s has one"
                         % (" and ".join(missing), recipes.display_path(channel_dir)))]
            hint = "torchwin build recipes/%s recipes/%s, where recipes/%s builds" % (
                made_here[name], variant.recipe, made_here[name])
        channel_label = labels.get(id(variant), "main")
        if problems:
            outcome = Outcome(variant, "skipped", reason="; ".join(full for _, full in problems),
                              hint=hint or build_command_hint(variant),
                              short="; ".join(dict.fromkeys(short for short, _ in problems)))
            progress.skip("%s skipped" % label)
        else:
            into = "" if channel_label == "main" else " into label %s" % channel_label
            progress.status("%s building%s..." % (label, into))
            if variant.recipe_dir not in staging:
                staging[variant.recipe_dir] = Path(tempfile.mkdtemp(prefix="torchwin-build-"))
            try:
                outcome = build_one(variant, channel_dir, extra_channels, test, package_format,
                                    staging[variant.recipe_dir])
            except BaseException:
                shutil.rmtree(staging.pop(variant.recipe_dir), ignore_errors=True)
                raise
            detail = "" if outcome.result == "built" else " (the reason is below)"
            progress.line("%s %s in %.1fs%s" % (label, outcome.result, outcome.seconds, detail))
        outcome.label = channel_label
        outcomes.append(outcome)
        last_of_recipe = index == total or variants[index].recipe_dir != variant.recipe_dir
        if last_of_recipe and variant.recipe_dir in staging:
            progress.clear()
            try:
                add_recipe([o for o in outcomes if o.variant.recipe_dir == variant.recipe_dir], channel_dir, out)
            finally:
                shutil.rmtree(staging.pop(variant.recipe_dir), ignore_errors=True)
    progress.clear()
    return outcomes


def unbuilt_requirements(variant: recipes.Variant, made_here: dict, outcomes, channel_dir: Path) -> list:
    """Its host requirements naming a package another recipe of this run makes (pytorch-cpu's
    `pytorch ==1.1.0 *_cpu_*`) that no variant built so far in this run, and no package of the local
    channel, matches. made_here: {package name: recipe} of the variants of this run."""
    from torchwin.channel.records import collect

    host = recipes.host_platform()
    available = [(o.variant.name, o.variant.version, o.variant.build_string, o.variant.subdir)
                 for o in outcomes if o.result == "built"]
    specs = [s for s in variant.host_requirements
             if made_here.get(s.partition(" ")[0], variant.recipe) != variant.recipe]
    if specs and channel_dir.is_dir():
        available += [(e.name, e.version, e.build, e.subdir) for e in collect(channel_dir)]
    return [spec for spec in specs if not any(
        subdir in (host, "noarch") and recipes.spec_matches(spec, name, version, build, subdir)
        for name, version, build, subdir in available)]


def build_one(variant, channel_dir: Path, extra_channels, test, package_format, staging: Path) -> Outcome:
    """Build and test one variant into staging; its files stay there until add_recipe()."""
    from rattler_build import ToolConfiguration

    channels = local_channels(variant, channel_dir) + list(extra_channels)
    started = time.monotonic()
    try:
        result = variant.rendered.run_build(
            tool_config=ToolConfiguration(test_strategy="native" if test else "skip"),
            output_dir=staging, channels=channels, no_build_id=True, package_format=package_format)
    except Exception as exc:  # the engine's errors carry the reason in their text
        return Outcome(variant, "failed", time.monotonic() - started, reason=_short(exc))
    return Outcome(variant, "built", time.monotonic() - started, files=tuple(Path(p) for p in result.packages))


def add_recipe(outcomes, channel_dir: Path, out) -> None:
    """Put one recipe's built packages into the channel, all of them or (after a failure) none.

    Built variants that are held back become "not added". A rebuild replaces the channel's copies
    of the same file names, which `channel add` refuses without --force: here it is what was asked
    for (build writes its own local channel, and a rebuild differs only in the timestamps inside),
    so it replaces them and says how many.
    """
    from torchwin.channel import command as channel
    from torchwin.channel.package_check import file_digest
    from torchwin.channel.store import label_root

    built = [o for o in outcomes if o.result == "built"]
    failed = [o for o in outcomes if o.result == "failed"]
    if not built:
        return
    recipe = built[0].variant.recipe
    if failed:
        first = failed[0].variant
        for o in built:
            o.result, o.files = "not added", ()
            o.reason = "%s %s %s failed, and a recipe's packages go into the channel together" % (
                first.name, first.version, first.build_string)
        say("recipes/%s: %d built package(s) not added to the channel: %s" % (recipe, len(built), built[0].reason),
            out)
        return
    replaced = 0
    try:
        for label in sorted({o.label for o in built}):
            members = [o for o in built if o.label == label]
            files = [f for o in members for f in o.files]
            root = label_root(channel_dir, label)
            for f in files:
                dest = root / f.parent.name / f.name
                replaced += dest.is_file() and file_digest(dest)[0] != file_digest(f)[0]
            placed = channel.add_packages(channel_dir, files, label=label, force=True)
            where = dict(zip(files, placed))
            for o in members:
                o.files = tuple(where[f] for f in o.files)
    except (UserError, Failure) as exc:
        for o in built:
            o.result, o.files, o.reason = "failed", (), str(exc)
        say("recipes/%s: not added to the channel: %s" % (recipe, exc), out)
        return
    if replaced:
        say("recipes/%s: replaced %d package(s) in %s: a rebuild has the same file names and new bytes "
            "(timestamps); build replaces in its own local channel, where `channel add` needs --force"
            % (recipe, replaced, channel_dir), out)


def local_channels(variant, channel_dir: Path) -> list:
    """The local channel for the build's and test's dependencies: main, plus a label only it needs
    (a CUDA 9.1 pytorch's test needs cudatoolkit 9.1 from label cuda-runtime)."""
    from torchwin.channel.config import MAIN
    from torchwin.channel.labels import dependency_labels
    from torchwin.channel.records import collect
    from torchwin.channel.store import label_root

    channels = [channel_dir.resolve().as_uri()] if (channel_dir / "noarch" / "repodata.json").is_file() else []
    if channel_dir.is_dir():
        needed = dependency_labels(MAIN, variant.subdir, variant.depends, collect(channel_dir))
        channels += [label_root(channel_dir, lab).resolve().as_uri() for lab in needed]
    return channels


def _short(exc) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines[:3]) if lines else type(exc).__name__


def install_lines(outcomes, channel_dir: Path):
    """(lines, note): one install line per platform and build selection, each solvable with the
    channels it names, and why a line names `-c defaults` (torchwin.try_it says how)."""
    from torchwin import try_it

    return try_it.lines_and_note(outcomes, channel_dir)
