"""Build torchvision for one variant: decide every switch its setup.py reads, print the plan, run it.

Called by build.sh / bld.bat with the variant's own Python (3.5+), so this file must stay valid
Python 3.5. The recipe passes the variant in TORCHWIN_* variables; the host prefix (PREFIX) and
recipe folder (RECIPE_DIR) come from the engine.

    build_torchvision.py                        decide, print the plan, run setup.py (the recipe's build)
    build_torchvision.py --plan [--json] [--platform win-64|linux-64]
                                                decide and print; compile nothing

What it decides, so that the package is the same whatever the build machine has installed:
  - CUDA ops: FORCE_CUDA (build machines have no GPU, and setup.py otherwise builds the CUDA ops only
    when torch sees one), and the GPU architectures of the paired pytorch build, taken from
    recipes/pytorch/build_driver.py and that release's facts: TORCH_CUDA_ARCH_LIST where torch's
    cpp_extension honours it (1.3.0 on), else -gencode flags in NVCC_FLAGS (1.1.0, 1.2.0 add none).
  - Optional extensions setup.py builds when it finds a library: the video reader (0.5.0 on, when
    `ffmpeg` is on PATH) is never built; the image extension (0.8.x, libpng via `libpng-config` /
    `pngfix`, libjpeg via jpeglib.h) always is, against the host prefix's libpng and jpeg. setup.py
    runs in this process with its executable lookups answered from that decision, not from PATH.

Exit 1 with one line when the build would fail, 2 on a wrong call.
"""

import argparse
import json
import os
import runpy
import shutil
import sys

PLATFORMS = ("win-64", "linux-64")

# torch/utils/cpp_extension.py reads TORCH_CUDA_ARCH_LIST from v1.3.0 on (without it, it asks the GPU of
# the build machine); v1.1.0 and v1.2.0 add no -gencode at all, so nvcc would build for its default sm_30.
ARCH_LIST_FROM_TORCH = (1, 3)
# torch 1.1.0's cpp_extension adds its half-precision nvcc flags on Linux only; pytorch/builder's Windows
# bld.bat for torchvision 0.3.0 passed them (1.2.0 on: both platforms).
HALF_FLAGS = ("-D__CUDA_NO_HALF_OPERATORS__", "--expt-relaxed-constexpr")
HALF_FLAGS_FROM_TORCH = (1, 2)
# Releases and the optional extensions their setup.py builds when it finds the library (README.md).
COMPILED_FROM = (0, 3)
VIDEO_READER_FROM = (0, 5)
IMAGE_FROM = (0, 8)

SETUP = ["setup.py", "install", "--single-version-externally-managed", "--record=record.txt"]


class BuildConfigError(Exception):
    """A variant/host combination that cannot build; the message says how to fix it."""


class UsageError(BuildConfigError):
    """The driver was called wrongly (not through the recipe)."""


def version_tuple(text):
    parts = []
    for part in text.split(".")[:3]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or 0))
    return tuple(parts)


def load_pytorch_driver(recipe_dir):
    """recipes/pytorch/build_driver.py, the one home of the rule that picks a build's GPU architectures."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(recipe_dir)), "pytorch", "build_driver.py")
    if not os.path.isfile(path):
        raise BuildConfigError("%s is missing: torchvision takes its GPU architectures from the pytorch recipe "
                               "beside it; build from a checkout of the whole repository" % path)
    spec = importlib.util.spec_from_file_location("torchwin_pytorch_build_driver", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytorch_arch_list(recipe_dir, releases, cuda):
    """TORCH_CUDA_ARCH_LIST of the pytorch builds this torchvision goes with (one list for all of them)."""
    driver = load_pytorch_driver(recipe_dir)
    pytorch_dir = os.path.join(os.path.dirname(os.path.abspath(recipe_dir)), "pytorch")
    lists = set()
    for release in releases:
        try:
            lists.add(driver.cuda_arch_list(driver.load_facts(pytorch_dir, release), cuda))
        except driver.BuildConfigError as exc:
            raise BuildConfigError(str(exc))
    if len(lists) != 1:
        raise BuildConfigError("pytorch %s compile for different GPU architectures (%s); give this torchvision "
                               "one row per pytorch release" % (" and ".join(releases), ", ".join(sorted(lists))))
    return lists.pop()


def gencode_flags(arch_list):
    """nvcc flags for `3.5;5.0;7.0+PTX`, spelled as torch's cpp_extension spells them from 1.3.0 on."""
    flags = []
    for arch in arch_list.split(";"):
        number = arch.replace("+PTX", "").replace(".", "")
        flags.append("-gencode=arch=compute_%s,code=sm_%s" % (number, number))
        if arch.endswith("+PTX"):
            flags.append("-gencode=arch=compute_%s,code=compute_%s" % (number, number))
    return flags


def host_library_dirs(prefix, is_windows):
    """(include, lib, bin) folders of the host prefix, where conda puts C libraries on each platform."""
    base = os.path.join(prefix, "Library") if is_windows else prefix
    return os.path.join(base, "include"), os.path.join(base, "lib"), os.path.join(base, "bin")


def plan(variant, environ, is_windows, recipe_dir, exists=os.path.exists):
    """Everything the build does: the environment setup.py sees, the executables it may find, the command.

    Pure but for reading recipes/pytorch (the architecture rule and its facts) and `exists` on the host prefix.
    """
    version = variant["version"]
    release = version_tuple(version)
    cuda = variant["cuda"]
    env = {
        # The version setup.py records instead of X.Y.Z+<sha>: BUILD_VERSION from 0.4 on (as upstream's
        # packaging sets it), TORCHVISION_BUILD_VERSION/NUMBER in 0.3.0 (1: no .postN suffix).
        "BUILD_VERSION": version,
        "TORCHVISION_BUILD_VERSION": version,
        "TORCHVISION_BUILD_NUMBER": "1",
        "FORCE_CUDA": "0" if cuda == "None" else "1",
        # Set either way, so that a value on the build machine never reaches setup.py.
        "NVCC_FLAGS": "",
    }
    unset = ["TORCH_CUDA_ARCH_LIST"]
    finders = {}
    compiled = release >= COMPILED_FROM
    if compiled and cuda != "None":
        torch = version_tuple(variant["pytorch_releases"][0])
        arch_list = pytorch_arch_list(recipe_dir, variant["pytorch_releases"], cuda)
        if torch >= ARCH_LIST_FROM_TORCH:
            env["TORCH_CUDA_ARCH_LIST"] = arch_list
            unset = []
        else:
            extra = list(HALF_FLAGS) if torch < HALF_FLAGS_FROM_TORCH else []
            env["NVCC_FLAGS"] = " ".join(extra + gencode_flags(arch_list))
    if compiled:
        # Never the video reader: it would link whatever ffmpeg the machine has (README.md).
        finders["ffmpeg"] = None
        png = None
        if release >= IMAGE_FROM:
            prefix = environ.get("PREFIX")
            if not prefix:
                raise UsageError("PREFIX is not set; run this through `conda build recipes/torchvision`")
            include, lib, bin_dir = host_library_dirs(prefix, is_windows)
            png = os.path.join(bin_dir, "pngfix.exe" if is_windows else "libpng-config")
            for needed, package in ((png, "libpng"), (os.path.join(include, "jpeglib.h"), "jpeg")):
                if not exists(needed):
                    raise BuildConfigError("%s is missing: torchvision %s builds its image extension against the "
                                           "host's %s (recipe.yaml host requirements)" % (needed, version, package))
            # setup.py looks for jpeglib.h here before BUILD_PREFIX and /usr/include.
            env["TORCHVISION_INCLUDE"] = include
            env["TORCHVISION_LIBRARY"] = lib
        # Only the finder of this platform is asked; the other answers "not found".
        finders["libpng-config"] = None if is_windows else png
        finders["pngfix"] = png if is_windows else None
    python = environ.get("PYTHON") or sys.executable
    return {"env": env, "unset": unset, "finders": finders, "commands": [[python] + SETUP]}


def variant_from_environ(environ):
    """The variant as the recipe's build script passes it."""
    missing = [k for k in ("TORCHWIN_TORCHVISION_VERSION", "TORCHWIN_PYTORCH_RELEASES") if not environ.get(k)]
    if missing:
        raise UsageError("the recipe did not pass %s; run this through `conda build recipes/torchvision`"
                         % ", ".join(missing))
    return {
        "version": environ["TORCHWIN_TORCHVISION_VERSION"],
        "cuda": environ.get("TORCHWIN_CUDA_VERSION") or "None",
        "pytorch_releases": environ["TORCHWIN_PYTORCH_RELEASES"].split(),
    }


def make_plan(environ, platform):
    variant = variant_from_environ(environ)
    recipe_dir = environ.get("RECIPE_DIR") or os.path.dirname(os.path.abspath(__file__))
    result = plan(variant, environ, platform == "win-64", recipe_dir)
    result.update({"version": variant["version"], "cuda": variant["cuda"], "platform": platform,
                   "pytorch_releases": variant["pytorch_releases"]})
    return result


def print_plan(result, out):
    out.write("torchwin build driver: torchvision %s (%s), CUDA %s, for pytorch %s\n"
              % (result["version"], result["platform"], result["cuda"], " ".join(result["pytorch_releases"])))
    for key in sorted(result["env"]):
        out.write("  %s=%s\n" % (key, result["env"][key]))
    for key in result["unset"]:
        out.write("  unset %s\n" % key)
    for name in sorted(result["finders"]):
        out.write("  finds %s: %s\n" % (name, result["finders"][name] or "nothing"))
    for command in result["commands"]:
        out.write("  command: %s\n" % " ".join(command))
    out.flush()


def answering(finders, lookup):
    """`lookup` (shutil.which or distutils' find_executable), answering the names in `finders` itself."""

    def find(name, *args, **kwargs):
        base = os.path.basename(name)
        key = base[:-len(".exe")] if base.lower().endswith(".exe") else base
        if key in finders:
            return finders[key]
        return lookup(name, *args, **kwargs)

    return find


def patch_lookups(finders):
    """Answer setup.py's executable lookups (shutil.which, distutils' find_executable) from `finders`.

    The names finders lacks go to shutil.which for both: setuptools' find_executable warns that it
    is deprecated (a DeprecationWarning in every build log) and does the same search."""
    # setuptools first, as setup.py imports it: from 60 on it swaps in its own distutils on import.
    import setuptools  # noqa: F401, I001
    import distutils.spawn

    which = shutil.which

    def find_executable(executable, path=None):
        return which(executable, path=path)

    distutils.spawn.find_executable = answering(finders, find_executable)
    shutil.which = answering(finders, which)


def run_setup(finders, args, src_dir):
    """Run setup.py here, in this process, with its executable lookups answered from `finders`."""
    patch_lookups(finders)
    os.chdir(src_dir)
    sys.path.insert(0, src_dir)
    sys.argv = list(args)
    try:
        runpy.run_path(args[0], run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Build torchvision for the variant the recipe passes (TORCHWIN_*).")
    parser.add_argument("--plan", action="store_true", help="print the environment, finders and command; build nothing")
    parser.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")
    parser.add_argument("--platform", choices=PLATFORMS, help="plan for this platform (default: the running one)")
    args = parser.parse_args(argv)
    if (args.json or args.platform) and not args.plan:
        parser.error("--json and --platform go with --plan")
    return args


def main(argv=None):
    args = parse_args(argv)
    platform = args.platform or ("win-64" if sys.platform == "win32" else "linux-64")
    try:
        result = make_plan(dict(os.environ), platform)
    except BuildConfigError as exc:
        print("torchwin build driver: error: %s" % exc, file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    if args.plan and args.json:
        json.dump({k: result[k] for k in sorted(result)}, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    print_plan(result, sys.stdout)
    if args.plan:
        return 0
    os.environ.update(result["env"])
    for name in result["unset"]:
        os.environ.pop(name, None)
    code = run_setup(result["finders"], result["commands"][0][1:], os.environ.get("SRC_DIR") or os.getcwd())
    if code:
        print("torchwin build driver: error: `%s` failed (exit %s)" % (" ".join(result["commands"][0]), code),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
