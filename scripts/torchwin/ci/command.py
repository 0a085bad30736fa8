"""`torchwin ci`: the CI's own steps, as commands anyone can run and read.

The workflows in .github/workflows call these instead of carrying inline
scripts, so what a CI step does is testable and the same on a maintainer's
machine:

  ci upstream        which upstream repository, ref and next version the nightly builds
  ci nightly-gate    refuse a ref the matrix cannot build; skip one already published
  ci published       the builds of the stages before pytorch's (magma) the label already holds
  ci matrix          render output -> the build matrix of the nightly
  ci variant-file    one matrix entry -> a variants.yaml for `conda build -m`
  ci package-format  the package format and zstd level `torchwin build` would use here
  ci install-vs2017  VS2017 Build Tools with the MSVC 14.11 toolset
  ci install-cuda    a CUDA toolkit and cuDNN
  ci hash            download the installers and print their sha256 (to pin them)

Downloads come from data/ci_downloads.yaml; each is checked against its
pinned sha256 (or NVIDIA's md5 and the Authenticode signer) before anything
runs, and an entry without a pin is refused.
"""

import argparse
import os
import sys
from pathlib import Path

from torchwin.ci import downloads as ci_downloads
from torchwin.ci import gha
from torchwin.ci import matrix as ci_matrix
from torchwin.ci.downloads_check import INSTALLER_KINDS, PLATFORMS
from torchwin.errors import Failure, UserError

EXAMPLES = """\
examples:
  # the plan job: the default upstream (from variants.yaml), then is this commit new and buildable?
  torchwin ci upstream
  torchwin ci nightly-gate --repo upstream --commit HEAD

  # what the nightly of 2019-06-01 would build (the plan job runs these two)
  TORCHWIN_NIGHTLY=20190601 torchwin render --target-platform all --json > render.json
  torchwin ci matrix render.json --only 'pytorch-win-64-*-cuda9.0'

  # show what installing CUDA 9.0 on Windows downloads and runs, changing nothing
  torchwin ci install-cuda 9.0 --platform win-64 --dry-run

  # on a Windows build machine (as administrator)
  torchwin ci install-vs2017
  torchwin ci install-cuda 9.0 --download-dir D:\\downloads

  # pin a download: fetch it once on a trusted machine and print its sha256
  torchwin ci hash cuda 9.0 --platform win-64
"""


def _default_download_dir():
    env = os.environ.get("TORCHWIN_DOWNLOAD_DIR")
    return Path(env) if env else Path.home() / ".cache" / "torchwin" / "downloads"


def _common_install(parser):
    parser.add_argument("--dry-run", action="store_true",
                        help="print every URL with its sha256 and the install commands; change nothing")
    parser.add_argument("--download-dir", type=Path, default=None, metavar="DIR",
                        help="where downloads are kept and reused (default: $TORCHWIN_DOWNLOAD_DIR or "
                        "~/.cache/torchwin/downloads; the nightly caches this folder)")
    parser.add_argument("--table", type=Path, default=None, metavar="FILE",
                        help="download table to use (default: the ci_downloads.yaml shipped with torchwin)")
    parser.add_argument("--github-env", action="store_true",
                        help="export the install locations to later GitHub Actions steps "
                        "($GITHUB_ENV, $GITHUB_PATH)")


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "ci", help="CI steps: build matrix, VS2017/CUDA installs from pinned downloads",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="ci_command", metavar="STEP")
    sub.required = True

    p = sub.add_parser(
        "upstream", help="print the upstream repository, ref and <next> version the nightly builds",
        description="The nightly follows --repo/--ref when given (TORCHWIN_UPSTREAM_REPO/REF, a dispatch "
        "input), else the newest release line of recipes/pytorch/variants.yaml that has a "
        "pytorch_nightly_base: its upstream release branch of pytorch/pytorch (refs/heads/vX.Y.Z up to "
        "1.3.1, refs/heads/release/X.Y from 1.4). "
        "base is --base, else that line's pytorch_nightly_base (nightly-version's --base).",
        epilog="example (GitHub Actions):\n  torchwin ci upstream --repo \"$UPSTREAM_REPO\" --ref \"$UPSTREAM_REF\" "
        "--base \"$NIGHTLY_BASE\" --github-output\n", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default="", metavar="OWNER/NAME", help="GitHub repository (empty: pytorch/pytorch)")
    p.add_argument("--ref", default="", metavar="REF", help="branch, tag or commit (empty: the default line)")
    p.add_argument("--base", default="", metavar="X.Y.Z", help="<next> for refs without version.txt "
                   "(empty: the line's pytorch_nightly_base)")
    p.add_argument("--recipe", default=None, metavar="RECIPE_DIR", help="default: recipes/pytorch")
    p.add_argument("--github-output", action="store_true", help="also append repo, ref, base to $GITHUB_OUTPUT")
    p.set_defaults(func=run_upstream)

    p = sub.add_parser(
        "nightly-gate", help="refuse an unsupported upstream version; skip a commit already published",
        description="Exit 2 (one line) when the commit declares a version (version.txt, else setup.py's "
        "`version = '...'`) outside the release lines variants.yaml builds nightlies for. Otherwise "
        "compare the commit with the one the newest pytorch-cpu file of the label on anaconda.org "
        "was built from (its info/about.json extra.upstream_commit): the same commit prints a notice "
        "and build=false; --force builds anyway.",
        epilog="example (GitHub Actions):\n  torchwin ci nightly-gate --repo upstream --commit \"$COMMIT\" "
        "--force \"$FORCE\" --github-output\n", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=".", metavar="PATH", help="local clone of upstream (default: .)")
    p.add_argument("--commit", default="HEAD", help="the commit the nightly would build (default: HEAD)")
    p.add_argument("--label", default="nightly", help="anaconda.org label of the nightlies (default: nightly)")
    p.add_argument("--force", default="false", metavar="true|false",
                   help="true: build even when the commit was already published (a dispatch input)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="channel.yaml naming the anaconda.org owner and API (default: channel/channel.yaml)")
    p.add_argument("--recipe", default=None, metavar="RECIPE_DIR", help="default: recipes/pytorch")
    p.add_argument("--github-output", action="store_true", help="also append build=true|false to $GITHUB_OUTPUT")
    p.set_defaults(func=run_nightly_gate)

    p = sub.add_parser(
        "published", help="list the earlier-stage builds (magma) the channel label already holds",
        description="Of the compiled recipes in the stages before the main recipe's (magma before pytorch: "
        "`torchwin ci matrix` derives them), the rendered builds that anaconda.org already has under the "
        "label, as a JSON list of build keys (subdir/name-version-build). `torchwin ci matrix --published "
        "FILE` then leaves them out of the build jobs, and the jobs that need them take them from the "
        "label (the `channel` step output: OWNER/label/LABEL). A recipe change must bump its build "
        "number to be built again.",
        epilog="example (GitHub Actions):\n  torchwin ci published \"$RUNNER_TEMP/render.json\" --label nightly "
        "--output \"$RUNNER_TEMP/published.json\" --github-output\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("render_json", metavar="FILE", help="render output (JSON); - reads standard input")
    p.add_argument("--label", default="nightly", help="anaconda.org label the nightly publishes to (default: nightly)")
    p.add_argument("--recipe", action="append", metavar="NAME", help="the main recipe (repeatable; default: pytorch)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="channel.yaml naming the anaconda.org owner and API (default: channel/channel.yaml)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE",
                   help="also write the JSON list here (for `torchwin ci matrix --published`)")
    p.add_argument("--github-output", action="store_true",
                   help="also append channel=OWNER/label/LABEL and count=N to $GITHUB_OUTPUT")
    p.set_defaults(func=run_published)

    p = sub.add_parser(
        "matrix", help="turn `torchwin render --json` output into the GitHub build matrix",
        description=ci_matrix.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="step outputs (--github-output; stdout shows the same entries as one JSON object):\n"
        "  windows, linux, all (+ windows-count, linux-count, count)  the build jobs of the --recipe\n"
        "      recipes (pytorch), as {\"include\": [...]}\n"
        "  <recipe>-windows, <recipe>-linux (+ -count)  the build jobs of each compiled recipe,\n"
        "      e.g. magma-windows, pytorch-linux, torchvision-windows\n"
        "  stages          the compiled recipes in build order, e.g. [[\"magma\"],[\"pytorch\"],[\"torchvision\"]]\n"
        "  tests (+ tests-count)  one clean-runner test per build job with a script test\n"
        "  gpu (+ gpu-count)      the Windows CUDA tests, on --gpu-runner (empty without one)\n"
        "  support-recipes        the script-only recipes the toolchain job builds\n"
        "  skip-rebuilt-artifacts artifacts of the stages before pytorch's (publish keeps their copies)\n"
        "Each entry names its artifact (`artifact`), the artifacts its job builds on (`needs_artifacts`,\n"
        "`needs_pattern` for download-artifact) and those its test installs (`test_pattern`); with\n"
        "--published, `from_channel` lists the earlier-stage packages it takes from the label instead.\n\n"
        "example:\n  torchwin render --target-platform all --json | "
        "torchwin ci matrix - --only 'pytorch-win-64-*'\n")
    p.add_argument("render_json", metavar="FILE", help="render output (JSON); - reads standard input")
    p.add_argument("--recipe", action="append", metavar="NAME",
                   help="the main recipe: the windows/linux/all outputs and --expect-version are its "
                   "(repeatable; default: pytorch); every compiled recipe gets build jobs")
    p.add_argument("--only", action="append", metavar="PATTERNS",
                   help="keep entries whose id matches one of these globs (comma or space separated), "
                   "e.g. 'pytorch-win-64-py3.6-*'")
    p.add_argument("--job-recipes", action="append", metavar="NAMES",
                   help="the compiled recipes the workflow has build jobs for, in the order they run "
                   "(comma separated, e.g. magma,pytorch,torchvision): a compiled recipe not listed, or an "
                   "order the stages contradict, is an error; a listed one that renders nothing gets "
                   "empty matrices")
    p.add_argument("--expect-version", metavar="V",
                   help="fail unless every build renders version V (the plan job passes nightly-version's)")
    p.add_argument("--windows-runner", default="windows-2022", metavar="LABELS",
                   help="runs-on for Windows CPU builds; commas give several labels (default: windows-2022)")
    p.add_argument("--windows-cuda-runner", default="", metavar="LABELS",
                   help="runs-on for Windows CUDA builds (default: same as --windows-runner)")
    p.add_argument("--linux-runner", default="ubuntu-24.04", metavar="LABELS",
                   help="runs-on for Linux builds (default: ubuntu-24.04)")
    p.add_argument("--linux-cuda-runner", default="", metavar="LABELS",
                   help="runs-on for Linux CUDA builds (default: same as --linux-runner)")
    p.add_argument("--gpu-runner", default="", metavar="LABELS",
                   help="runs-on of a machine with an NVIDIA GPU; empty: no GPU test jobs")
    p.add_argument("--published", type=Path, default=None, metavar="FILE",
                   help="`torchwin ci published --output` of this render: earlier-stage builds the label "
                   "already holds are not built again; the jobs needing them list them in `from_channel`")
    p.add_argument("--github-output", action="store_true",
                   help="append the step outputs listed below to $GITHUB_OUTPUT")
    p.set_defaults(func=run_matrix)

    p = sub.add_parser(
        "variant-file", help="write the variants.yaml that pins one matrix entry for `conda build -m`",
        epilog="example (GitHub Actions):\n"
        "  torchwin ci variant-file --variant-json \"$VARIANT\" --output \"$RUNNER_TEMP/variant.yaml\"\n"
        "  conda build recipes/pytorch -m \"$RUNNER_TEMP/variant.yaml\"\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant-json", required=True, metavar="JSON",
                   help="the values to pin, e.g. the matrix entry's `variant` object; the values zipped "
                        "with them in the recipe's variants.yaml are pinned too")
    p.add_argument("--output", required=True, type=Path, metavar="FILE", help="file to write")
    p.add_argument("--recipe", default=None, metavar="RECIPE_DIR", help="default: recipes/pytorch")
    p.add_argument("--target-platform", default=None, metavar="PLATFORM", help="default: this host's")
    p.set_defaults(func=run_variant_file)

    p = sub.add_parser(
        "package-format", help="print the package format and zstd level torchwin build would use",
        description="The format `torchwin build` packs with (nightly when TORCHWIN_NIGHTLY is set, else "
                    "release), split for conda build's --package-format and --zstd-compression-level.",
        epilog="example (GitHub Actions):\n  TORCHWIN_NIGHTLY=20190601 torchwin ci package-format "
               "--github-output\n  conda build ... --package-format conda --zstd-compression-level "
               "\"$ZSTD_LEVEL\"\n", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--github-output", action="store_true",
                   help="also append package-format=... and zstd-level=... to $GITHUB_OUTPUT")
    p.set_defaults(func=run_package_format)

    p = sub.add_parser("install-vs2017", help="install the VS2017 Build Tools with the MSVC 14.11 toolset",
                       description="Download the VS2017 Build Tools bootstrapper, check its sha256, and "
                       "install the C++ tools with the 14.11 toolset CUDA 9.0/9.1 need.")
    _common_install(p)
    p.set_defaults(func=run_install_vs2017)

    p = sub.add_parser("install-cuda", help="install a CUDA toolkit X.Y and its cuDNN",
                       description="Download the CUDA X.Y installer and cuDNN, check their sha256, install "
                       "the toolkit silently with the sub-packages a PyTorch build needs, and unpack cuDNN "
                       "into it.")
    p.add_argument("version", metavar="X.Y", help="CUDA version, e.g. 9.0")
    p.add_argument("--platform", choices=PLATFORMS, default=None,
                   help="platform of the plan (default: this machine's)")
    p.add_argument("--installer", choices=INSTALLER_KINDS, default="local",
                   help="local: the full installer, every byte pinned (default); network: small, fetches "
                   "its parts from NVIDIA at install time")
    p.add_argument("--install-dir", metavar="DIR",
                   help="install the toolkit here (Linux; default from the table)")
    p.add_argument("--no-cudnn", action="store_true", help="install the toolkit only")
    _common_install(p)
    p.set_defaults(func=run_install_cuda)

    p = sub.add_parser("hash", help="download installers and print their sha256 (to pin them in the table)",
                       description="Fetch the files of one table entry without running anything, check "
                       "NVIDIA's published md5 where the table has one, and print each sha256 for "
                       "scripts/torchwin/data/ci_downloads.yaml. Run it on a machine you trust.",
                       epilog="examples:\n  torchwin ci hash vs2017\n  torchwin ci hash cuda 9.0 --platform "
                       "win-64\n  torchwin ci hash cuda 9.0 --platform win-64 --installer network\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tool", choices=("vs2017", "cuda"))
    p.add_argument("version", nargs="?", metavar="X.Y", help="CUDA version (for `cuda`)")
    p.add_argument("--platform", choices=PLATFORMS, default=None)
    p.add_argument("--installer", choices=INSTALLER_KINDS, default="local")
    p.add_argument("--download-dir", type=Path, default=None, metavar="DIR")
    p.add_argument("--table", type=Path, default=None, metavar="FILE")
    p.set_defaults(func=run_hash)


def _read(source):
    if source == "-":
        return sys.stdin.read(), "standard input"
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise UserError(f"{source}: cannot read ({exc.strerror or exc})") from None


def _write_atomic(path, text):
    """Write through a temporary file, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def print_outputs(pairs, github_output):
    """name=value lines on stdout, and the same as step outputs when --github-output is given."""
    for name, value in pairs:
        print(f"{name}={value}")
    if github_output:
        gha.write_outputs(pairs)


def _channel_with_label(path, label):
    """channel.yaml (--config), or one UserError line when --label is not one of its labels."""
    from torchwin.channel.config import load_channel_config

    config = load_channel_config(path)
    if label not in config.labels:
        raise UserError(f"--label {label!r} is not a label of {config.path or 'channel.yaml'} "
                        f"(it lists: {', '.join(config.labels)})")
    return config


def run_upstream(args):
    from torchwin.ci import nightly

    repo, ref, base = nightly.upstream_source(args.repo, args.ref, args.base, args.recipe)
    print_outputs([("repo", repo), ("ref", ref), ("base", base)], args.github_output)
    return 0


def run_nightly_gate(args):
    from torchwin.ci import nightly

    if args.force not in ("true", "false"):
        raise UserError(f"--force {args.force!r}: allowed: true, false")
    config = _channel_with_label(args.config, args.label)
    build, message = nightly.nightly_gate(args.repo, args.commit, config.api_url, config.owner, args.label,
                                          force=args.force == "true", recipe_dir=args.recipe)
    # A workflow command: GitHub shows it on the run's summary page.
    print(message if build else f"::notice title=nightly skipped::{message}")
    if args.github_output:
        gha.write_outputs([("build", "true" if build else "false")])
    return 0


def run_published(args):
    import json

    from torchwin.ci import anaconda_api, stages

    text, where = _read(args.render_json)
    records = ci_matrix.load_records(text, where)
    recipes = tuple(args.recipe or ("pytorch",))
    config = _channel_with_label(args.config, args.label)
    earlier = set(stages.before_main(stages.stages(records, stages.compiled_recipes(records, recipes)), recipes))
    wanted = {anaconda_api.build_key(r["subdir"], r["name"], r["version"], r["build_string"]): r["name"]
              for r in records if r["recipe"] in earlier and not r.get("skip")}
    have = anaconda_api.published_builds(config.api_url, config.owner, args.label, set(wanted.values()))
    found = sorted(set(wanted) & have)
    text = json.dumps(found, indent=2) + "\n"
    if args.output:
        _write_atomic(args.output, text)
    sys.stdout.write(text)
    print(f"published: {len(found)} of {len(wanted)} build(s) of {', '.join(sorted(earlier)) or 'no recipe'} "
          f"already under {config.owner}/label/{args.label}", file=sys.stderr)
    if args.github_output:
        gha.write_outputs([("channel", f"{config.owner}/label/{args.label}"), ("count", str(len(found)))])
    return 0


def _published(path):
    import json

    if path is None:
        return frozenset()
    text, where = _read(str(path))
    try:
        keys = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not JSON ({exc}); pass the --output of `torchwin ci published`") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UserError(f"{where}: expected a JSON list of build keys (subdir/name-version-build)")
    return frozenset(keys)


def run_matrix(args):
    import json

    text, where = _read(args.render_json)
    records = ci_matrix.load_records(text, where)
    recipes = tuple(args.recipe or ("pytorch",))
    runners = ci_matrix.Runners(
        windows=args.windows_runner, windows_cuda=args.windows_cuda_runner,
        linux=args.linux_runner, linux_cuda=args.linux_cuda_runner, gpu=args.gpu_runner)
    matrix = ci_matrix.build_matrix(records, recipes=recipes, runners=runners,
                                    only=ci_matrix.parse_only(args.only), expect_version=args.expect_version,
                                    job_recipes=ci_matrix.parse_only(args.job_recipes),
                                    published=_published(args.published))
    support = ci_matrix.support_recipes(records, recipes)
    rebuilt = ci_matrix.skip_rebuilt_artifacts(matrix, recipes)
    print(json.dumps(dict(matrix, support_recipes=support, skip_rebuilt_artifacts=rebuilt), indent=2,
                     sort_keys=True))
    counts = ", ".join(f"{len(kinds[k])} {recipe}-{k}" for names in matrix["stages"] for recipe in names
                       for kinds in [matrix["recipes"][recipe]] for k in ("windows", "linux"))
    print(f"matrix: {counts}, {len(matrix['tests'])} test, {len(matrix['gpu'])} gpu job(s)", file=sys.stderr)
    if args.github_output:
        gha.write_outputs(ci_matrix.github_outputs(matrix, support, rebuilt))
    return 0


def run_variant_file(args):
    import json

    try:
        variant = json.loads(args.variant_json)
    except json.JSONDecodeError as exc:
        raise UserError(f"--variant-json is not JSON ({exc})") from None
    if not isinstance(variant, dict) or not variant:
        raise UserError("--variant-json must be a non-empty JSON object, e.g. {\"python\": \"3.6\"}")
    from torchwin import recipes

    recipe_dir = Path(args.recipe) if args.recipe else recipes.require_repo_root() / "recipes" / "pytorch"
    platform = recipes.check_platform(args.target_platform or recipes.host_platform())[0]
    zips, values = ci_matrix.recipe_zip_info(recipe_dir, platform)
    where = recipes.display_path(recipe_dir / "variants.yaml")
    # A pin the matrix does not have would make conda build render a variant nobody tested.
    ci_matrix.check_pins(variant, values, where, platform)
    try:
        variant = ci_matrix.complete_zips(variant, zips, values)
    except Failure as exc:
        raise UserError(f"--variant-json: {exc}") from None
    text = ci_matrix.variant_file_text(variant)
    _write_atomic(args.output, text)
    # One line: the file is where the values are (printing them too made two copies in the log).
    print("wrote %s: %s" % (args.output, ", ".join("%s=%s" % (k, v) for k, v in sorted(variant.items()))))
    return 0


def run_package_format(args):
    from torchwin import recipes
    from torchwin.build import default_package_format

    recipes.check_environment()  # TORCHWIN_NIGHTLY must be a date, as for every build

    kind, _, level = default_package_format().partition(":")
    print_outputs([("package-format", kind), ("zstd-level", level)], args.github_output)
    return 0


def run_install_vs2017(args):
    table = ci_downloads.load_table(args.table)
    plan = ci_downloads.vs2017_plan(table)
    return ci_downloads.execute(plan, args.download_dir or _default_download_dir(), dry_run=args.dry_run,
                                github_env=args.github_env)


def run_install_cuda(args):
    table = ci_downloads.load_table(args.table)
    plan = ci_downloads.cuda_plan(table, args.version, platform=args.platform, installer=args.installer,
                                  install_dir=args.install_dir, with_cudnn=not args.no_cudnn)
    return ci_downloads.execute(plan, args.download_dir or _default_download_dir(), dry_run=args.dry_run,
                                github_env=args.github_env)


def run_hash(args):
    table = ci_downloads.load_table(args.table)
    if args.tool == "vs2017":
        plan = ci_downloads.vs2017_plan(table)
    else:
        if not args.version:
            raise UserError("torchwin ci hash cuda needs the CUDA version, e.g. `torchwin ci hash cuda 9.0`")
        plan = ci_downloads.cuda_plan(table, args.version, platform=args.platform, installer=args.installer)
    return ci_downloads.hash_downloads(plan, args.download_dir or _default_download_dir())
