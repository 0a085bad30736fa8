"""Build script of recipes/vs2017: fill the activation templates and install them into $PREFIX.

Runs with the build machine's Python (standard library only), also on Linux hosts building the win-64
package. The values come from recipe.yaml's context (through TORCHWIN_* variables) and from
saved_variables.txt, which both the activation and the deactivation script are filled from.
"""
import os
import re
import sys

PACKAGE = "vs2017_win-64"
# Where activation keeps the values it replaces, e.g. _TORCHWIN_VS2017_OLD_INCLUDE.
SAVED_PREFIX = "_TORCHWIN_VS2017_OLD_"


def read_names(path):
    """The variable names in saved_variables.txt: one a line, '#' starts a comment."""
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            name = line.split("#", 1)[0].strip()
            if not name:
                continue
            # The names become parts of cmd `set` lines and variable names.
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                sys.exit("%s: %r is not a plain variable name" % (path, name))
            names.append(name)
    if len({n.upper() for n in names}) != len(names):
        sys.exit("%s: a name is listed twice (cmd variable names ignore case)" % path)
    return names


# The same function is in recipes/nvcc/install_activation.py: a recipe folder must stand
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
    if os.environ["target_platform"] != "win-64":
        sys.exit("%s: only the win-64 target is supported, not %s" % (PACKAGE, os.environ["target_platform"]))
    recipe_dir = os.environ["RECIPE_DIR"]
    toolset = os.environ["TORCHWIN_MSVC_TOOLSET"]
    if not re.match(r"^14\.\d+$", toolset):
        sys.exit("%s: bad MSVC toolset %r in recipe.yaml's context" % (PACKAGE, toolset))
    names = read_names(os.path.join(recipe_dir, "saved_variables.txt"))
    # One plain `set` line per variable rather than a FOR loop with `call set`: the loop's double
    # expansion mangles values (a FOR variable letter also expands inside the second pass) and CALL
    # doubles carets; plain lines copy any value as it is.
    save = ['set "%s%s=%%%s%%"' % (SAVED_PREFIX, n, n) for n in names]
    restore = []
    for n in names:
        restore.append('set "%s=%%%s%s%%"' % (n, SAVED_PREFIX, n))
        restore.append('set "%s%s="' % (SAVED_PREFIX, n))
    values = {
        "PACKAGE": PACKAGE,
        "MSVC_TOOLSET": toolset,
        "VS_VERSION_RANGE": os.environ["TORCHWIN_VS_VERSION_RANGE"],
        "SAVE_VARIABLES": "\n".join(save),
        "RESTORE_VARIABLES": "\n".join(restore),
    }
    for kind in ("activate", "deactivate"):
        text = fill(os.path.join(recipe_dir, kind + ".bat.in"), values)
        folder = os.path.join(os.environ["PREFIX"], "etc", "conda", kind + ".d")
        if not os.path.isdir(folder):
            os.makedirs(folder)
        # CRLF: cmd.exe mis-parses labels and GOTO in batch files with bare LF line endings.
        path = os.path.join(folder, "%s_%s.bat" % (PACKAGE, kind))
        with open(path, "w", encoding="utf-8", newline="\r\n") as f:
            f.write(text)


if __name__ == "__main__":
    main()
