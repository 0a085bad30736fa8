"""Build script of recipes/cuda-runtime: copy NVIDIA's runtime libraries from an installed CUDA toolkit.

Runs with the build machine's Python (standard library only, Python 3.5+) for both targets: a win-64
package can be built on a Linux host from a copy of a Windows toolkit that CUDA_PATH_VX_Y points at.
Which files it copies, from where, is runtime_files.txt. Before copying anything it checks that the
toolkit is exactly the CUDA release the package is named for (version.txt) and cuDNN exactly its version
(cudnn.h), and otherwise stops with one line naming what is missing and where it looked.

`torchwin build` calls host_problem() before building, with the environment the build would give this
script, and reports the variant as skipped with that line instead of building it.

Environment (set by recipe.yaml; the engine gives build scripts a clean environment, so the user's
variables are read there and passed under these names):
  TORCHWIN_PACKAGE               cudatoolkit or cudnn
  TORCHWIN_CUDA_VERSION          the CUDA release, e.g. 9.1
  TORCHWIN_CUDATOOLKIT_VERSION   the full toolkit version version.txt must show, e.g. 9.1.85
  TORCHWIN_CUDNN_VERSION         the cuDNN version cudnn.h must show, e.g. 7.1.3
  TORCHWIN_CUDA_HOME             the value of CUDA_PATH_VX_Y (empty: not set)
  TORCHWIN_CUDNN_HOME            the value of TORCHWIN_CUDNN_PATH_VX_Y (empty: not set)
  TORCHWIN_NVTOOLSEXT_HOME       the value of NVTOOLSEXT_PATH (empty: not set)
  TORCHWIN_PROGRAM_FILES         the value of ProgramFiles (empty on Linux hosts)
  target_platform, RECIPE_DIR, PREFIX   from the engine
"""
import fnmatch
import os
import re
import shutil
import sys

FILES = "runtime_files.txt"
PACKAGES = ("cudatoolkit", "cudnn")
# Where conda packages keep shared libraries: the folder conda puts on PATH for an environment (Windows),
# and the folder conda's own libraries and their RPATHs point at (Linux).
DESTINATIONS = {"win-64": os.path.join("Library", "bin"), "linux-64": "lib"}
SOURCES = ("toolkit", "cudnn", "nvtoolsext")
PLACEHOLDERS = ("cuda", "cuda_nodot", "cudnn_major")


class Refusal(Exception):
    """What this host lacks, as the one line the build prints."""


class Request:
    """One package of one CUDA release for one platform, as the build environment describes it."""

    def __init__(self, environ):
        def get(name):
            value = environ.get(name, "")
            if not value:
                raise ValueError("%s is not set (recipe.yaml passes it to the build script)" % name)
            return value

        self.package = get("TORCHWIN_PACKAGE")
        self.target = get("target_platform")
        self.cuda = get("TORCHWIN_CUDA_VERSION")
        self.toolkit_version = get("TORCHWIN_CUDATOOLKIT_VERSION")
        self.cudnn_version = get("TORCHWIN_CUDNN_VERSION")
        self.recipe_dir = get("RECIPE_DIR")
        if self.package not in PACKAGES:
            raise ValueError("TORCHWIN_PACKAGE=%s: allowed: %s" % (self.package, ", ".join(PACKAGES)))
        if self.target not in DESTINATIONS:
            raise ValueError("target platform %s: allowed: %s" % (self.target, ", ".join(sorted(DESTINATIONS))))
        if not re.match(r"^\d+\.\d+$", self.cuda) or not self.toolkit_version.startswith(self.cuda + "."):
            raise ValueError("CUDA %r and toolkit version %r do not match" % (self.cuda, self.toolkit_version))
        if not re.match(r"^\d+\.\d+\.\d+$", self.cudnn_version):
            raise ValueError("cuDNN version %r: expected X.Y.Z" % self.cudnn_version)
        tag = self.cuda.replace(".", "_")
        # The names the user sets; messages speak of these, not of the TORCHWIN_* copies.
        self.cuda_var = "CUDA_PATH_V" + tag
        self.cudnn_var = "TORCHWIN_CUDNN_PATH_V" + tag
        self.cuda_home = environ.get("TORCHWIN_CUDA_HOME", "")
        self.cudnn_home = environ.get("TORCHWIN_CUDNN_HOME", "")
        self.nvtoolsext_home = environ.get("TORCHWIN_NVTOOLSEXT_HOME", "")
        self.program_files = environ.get("TORCHWIN_PROGRAM_FILES", "")
        self.values = {"cuda": self.cuda, "cuda_nodot": self.cuda.replace(".", ""),
                       "cudnn_major": self.cudnn_version.split(".")[0]}

    @property
    def label(self):
        if self.package == "cudnn":
            return "cudnn %s for CUDA %s (%s)" % (self.cudnn_version, self.cuda, self.target)
        return "cudatoolkit %s (%s)" % (self.toolkit_version, self.target)


def read_files(path):
    """The lines of runtime_files.txt as (package, platform, source, pattern); bad lines raise ValueError."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = text.split()
            where = "%s line %d" % (path, number)
            if len(fields) != 4:
                raise ValueError("%s: expected PACKAGE PLATFORM FROM PATTERN, got %r" % (where, text))
            package, platform, source, pattern = fields
            if package not in PACKAGES or platform not in DESTINATIONS or source not in SOURCES:
                raise ValueError("%s: %r: PACKAGE is one of %s, PLATFORM one of %s, FROM one of %s"
                                 % (where, text, ", ".join(PACKAGES), ", ".join(sorted(DESTINATIONS)),
                                    ", ".join(SOURCES)))
            folder, name = pattern.rsplit("/", 1) if "/" in pattern else ("", pattern)
            if "*" in folder or "?" in folder or "[" in pattern or pattern.startswith("/"):
                raise ValueError("%s: %r: a relative path, with * only in the file name" % (where, pattern))
            for placeholder in re.findall(r"\{(\w*)\}", pattern):
                if placeholder not in PLACEHOLDERS:
                    raise ValueError("%s: {%s}: allowed: %s" % (where, placeholder,
                                                                ", ".join("{%s}" % p for p in PLACEHOLDERS)))
            rows.append((package, platform, source, pattern))
    return rows


def read_version_txt(folder):
    """'9.1.85' from the first line of a toolkit's version.txt ('CUDA Version 9.1.85'), or None."""
    path = os.path.join(folder, "version.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        match = re.match(r"\s*CUDA Version\s+(\S+)", f.readline())
    return match.group(1) if match else "unreadable"


def read_cudnn_h(folder):
    """'7.1.3' from include/cudnn.h's CUDNN_MAJOR, CUDNN_MINOR and CUDNN_PATCHLEVEL, or None."""
    path = os.path.join(folder, "include", "cudnn.h")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    parts = []
    for name in ("CUDNN_MAJOR", "CUDNN_MINOR", "CUDNN_PATCHLEVEL"):
        match = re.search(r"^\s*#\s*define\s+%s\s+(\d+)" % name, text, re.MULTILINE)
        if not match:
            return "unreadable"
        parts.append(match.group(1))
    return ".".join(parts)


def toolkit_candidates(req):
    """(folder, how it was found) in the order they are tried."""
    if req.cuda_home:
        # An explicit choice is the only candidate: a wrong one is reported, not passed over.
        return [(req.cuda_home, req.cuda_var)]
    if req.target == "win-64":
        if not req.program_files:
            return []
        return [(os.path.join(req.program_files, "NVIDIA GPU Computing Toolkit", "CUDA", "v" + req.cuda),
                 "the CUDA installer's default folder")]
    return [("/usr/local/cuda-" + req.cuda, "the default folder"), ("/usr/local/cuda", "the default link")]


def find_toolkit(req):
    """(folder, how it was found) of the CUDA toolkit of exactly req.toolkit_version, else Refusal."""
    looked = []
    for folder, how in toolkit_candidates(req):
        if not os.path.isdir(folder):
            looked.append("%s does not exist" % folder)
            continue
        found = read_version_txt(folder)
        if found == req.toolkit_version:
            return folder, how
        looked.append("%s has no version.txt" % folder if found is None
                      else "%s is CUDA %s (version.txt)" % (folder, found))
    if req.cuda_home:
        where = "%s=%s, but %s" % (req.cuda_var, req.cuda_home, looked[0])
    else:
        where = "%s is not set; %s" % (req.cuda_var, "; ".join(looked) if looked else
                                       "this host has no default folder for %s toolkits" % req.target)
    raise Refusal("%s: no CUDA %s toolkit: %s. Install CUDA %s, or set %s to the folder of one"
                  % (req.label, req.toolkit_version, where, req.toolkit_version, req.cuda_var))


def find_cudnn(req, toolkit):
    """(folder, how it was found) of cuDNN of exactly req.cudnn_version, else Refusal."""
    if req.cudnn_home:
        folder, how = req.cudnn_home, req.cudnn_var
    else:
        folder, how = toolkit()
        how = "the CUDA toolkit from %s" % how
    found = read_cudnn_h(folder) if os.path.isdir(folder) else None
    if found == req.cudnn_version:
        return folder, how
    if not os.path.isdir(folder):
        problem = "%s does not exist" % folder
    elif found is None:
        problem = "%s has no include/cudnn.h" % folder
    else:
        problem = "%s holds cuDNN %s (include/cudnn.h)" % (folder, found)
    raise Refusal("%s: no cuDNN %s: looked in %s (%s): %s. Unpack cuDNN %s for CUDA %s into the toolkit "
                  "folder, or set %s to the folder holding its include/ and %s"
                  % (req.label, req.cudnn_version, folder, how, problem, req.cudnn_version, req.cuda,
                     req.cudnn_var, "bin/" if req.target == "win-64" else "lib64/"))


def find_nvtoolsext(req):
    """(folder, how it was found) of NvToolsExt on Windows, else Refusal."""
    if req.nvtoolsext_home:
        folder, how = req.nvtoolsext_home, "NVTOOLSEXT_PATH"
    elif req.program_files:
        folder, how = os.path.join(req.program_files, "NVIDIA Corporation", "NvToolsExt"), "its default folder"
    else:
        raise Refusal("%s: no NvToolsExt: NVTOOLSEXT_PATH is not set and this host has no default folder for "
                      "it. Install CUDA %s with NvToolsExt, or set NVTOOLSEXT_PATH to its folder"
                      % (req.label, req.toolkit_version))
    if not os.path.isdir(folder):
        raise Refusal("%s: no NvToolsExt: %s (%s) does not exist. Install CUDA %s with NvToolsExt, or set "
                      "NVTOOLSEXT_PATH to its folder" % (req.label, folder, how, req.toolkit_version))
    return folder, how


def matches(folder, pattern):
    """Files in folder matching pattern (wildcards in the file name only), sorted."""
    directory, _, name = pattern.rpartition("/")
    directory = os.path.join(folder, *directory.split("/")) if directory else folder
    if not os.path.isdir(directory):
        return []
    found = []
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        # A link whose target is gone is not a library: report the line instead of packaging the link.
        if fnmatch.fnmatch(entry, name) and os.path.isfile(path):
            found.append(path)
    return found


def plan(environ):
    """[source file, ...] to copy for the package the environment describes, or Refusal."""
    req = Request(environ)
    rows = read_files(os.path.join(req.recipe_dir, FILES))
    wanted = [(source, pattern.format(**req.values)) for package, platform, source, pattern in rows
              if package == req.package and platform == req.target]
    if not wanted:
        raise ValueError("%s lists no file for %s on %s" % (FILES, req.package, req.target))
    found = {}

    def folder_of(source):
        if source not in found:
            if source == "toolkit":
                found[source] = find_toolkit(req)
            elif source == "cudnn":
                found[source] = find_cudnn(req, lambda: folder_of("toolkit"))
            elif req.target == "win-64":
                found[source] = find_nvtoolsext(req)
            else:
                found[source] = folder_of("toolkit")
        return found[source]

    if req.package == "cudnn":
        folder_of("cudnn")  # checks cudnn.h's version before any file
    files = []
    missing = {}
    for source, pattern in wanted:
        folder = folder_of(source)
        hits = matches(folder[0], pattern)
        if not hits:
            missing.setdefault(folder, []).append(pattern)
        files.extend(hits)
    if missing:
        parts = ["%s (from %s) lacks %s" % (folder, how, ", ".join(patterns))
                 for (folder, how), patterns in sorted(missing.items())]
        raise Refusal("%s: %s. Install the missing components (a full install of CUDA %s%s has them)"
                      % (req.label, "; ".join(parts), req.toolkit_version,
                         " and cuDNN %s" % req.cudnn_version if req.package == "cudnn" else ""))
    return files


def host_problem(environ):
    """Why this host cannot build the package the environment describes; "" when it can."""
    try:
        plan(environ)
    except Refusal as exc:
        return str(exc)
    return ""


def install(files, destination):
    """Copy files into destination; a link to another of the files stays a link (Linux SONAMEs)."""
    if not os.path.isdir(destination):
        os.makedirs(destination)
    names = set(os.path.basename(f) for f in files)
    for source in files:
        target = os.path.join(destination, os.path.basename(source))
        link = os.readlink(source) if os.path.islink(source) else None
        if link is not None and link in names:
            try:
                os.symlink(link, target)
                continue
            except (OSError, NotImplementedError):
                pass  # no symlinks on this host: a copy loads the same
        shutil.copy2(source, target)  # follows links that lead out of the copied set


def main():
    try:
        files = plan(os.environ)
    except Refusal as exc:
        sys.exit(str(exc))
    except ValueError as exc:
        sys.exit("cuda-runtime: %s" % exc)
    install(files, os.path.join(os.environ["PREFIX"], DESTINATIONS[os.environ["target_platform"]]))
    for source in files:
        print("copied %s" % source)


if __name__ == "__main__":
    main()
