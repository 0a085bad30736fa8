"""Build script of recipes/nvcc: fill the activation templates and install them into $PREFIX.

Runs with the build machine's Python (standard library only) for every target, because the win-64
package is built on Linux hosts as well. The values come from recipe.yaml's context through the
TORCHWIN_* variables, so the .sh and .bat scripts share one source for every version number.
"""
import os
import re
import sys

# target platform -> (template stem, file extension, line ending). cmd.exe mis-parses labels and
# GOTO in batch files with bare LF line endings, so .bat files get CRLF.
SHELLS = {
    "linux-64": ("sh", ".sh", "\n"),
    "win-64": ("bat", ".bat", "\r\n"),
}


# The same function is in recipes/vs2017/install_activation.py: a recipe folder must stand
# alone (conda build copies only it), so each carries its own copy; a test keeps them identical.
def fill(template_path, values):
    """Return the template text with every @NAME@ replaced; fail on a name without a value."""
    with open(template_path, encoding="utf-8") as f:
        text = f.read()

    def value(match):
        name = match.group(1)
        if name not in values:
            sys.exit("%s: no value for @%s@" % (template_path, name))
        return values[name]

    return re.sub(r"@([A-Z][A-Z0-9_]*)@", value, text)


def main():
    target = os.environ["target_platform"]
    if target not in SHELLS:
        sys.exit("nvcc: no activation scripts for target platform %s" % target)
    stem, ext, newline = SHELLS[target]
    version = os.environ["TORCHWIN_CUDA_VERSION"]
    gcc_max = os.environ["TORCHWIN_GCC_MAX"]
    if not re.match(r"^\d+\.\d+$", version) or not gcc_max.isdigit():
        sys.exit("nvcc: bad CUDA version %r or gcc maximum %r in recipe.yaml's context" % (version, gcc_max))
    package = "nvcc_" + target
    values = {
        "PACKAGE": package,
        "CUDA_VERSION": version,
        # The variable the CUDA installer sets for this release, e.g. CUDA_PATH_V9_0.
        "CUDA_PATH_VAR": "CUDA_PATH_V" + os.environ["TORCHWIN_CUDA_TAG"],
        "GCC_MAX": gcc_max,
    }
    for kind in ("activate", "deactivate"):
        text = fill(os.path.join(os.environ["RECIPE_DIR"], "%s.%s.in" % (kind, stem)), values)
        folder = os.path.join(os.environ["PREFIX"], "etc", "conda", kind + ".d")
        if not os.path.isdir(folder):
            os.makedirs(folder)
        # "~" sorts after letters: conda runs these after the compilers' own activation scripts
        # (activate-gcc_linux-64.sh sets CC, vs2017's sets up cl.exe), whose results they check.
        path = os.path.join(folder, "~%s_%s%s" % (package, kind, ext))
        with open(path, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)


if __name__ == "__main__":
    main()
