"""The linux activation of nvcc_linux-64, sourced for real in bash (and dash), as conda does.

The packages are built with `torchwin build` and installed with py-rattler; the scripts run from the prefix.
Two things cannot exist here and are faked at their edge: a CUDA 8.0-9.2 toolkit (a folder whose bin/nvcc
prints what that release's nvcc prints) and an old gcc (a script answering --version and -dumpfullversion).
The real CUDA toolkit of this machine (/usr/local/cuda) is used as it is, to check that it is refused.
"""

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from torchwin.cli import main

# The linux-64 scripts run in a POSIX shell with POSIX paths, ':'-separated PATHs and `#!/bin/sh` fakes.
# Windows may have a bash (Git's), but not that world; the .bat scripts are checked in test_toolchain_wine.py.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="runs the linux-64 scripts in a POSIX shell")

rattler = pytest.importorskip("rattler")

ROOT = Path(__file__).resolve().parents[1]
# What NVIDIA's Linux installation guides list as the newest gcc each release accepts (issue 9).
GCC_MAX = {"8.0": 5, "9.0": 6, "9.1": 6, "9.2": 7}
# The first lines of `nvcc --version` of each release.
NVCC_RELEASES = {
    "8.0": ("Tue_Jan_10_13:22:03_CST_2017", "8.0.61"),
    "9.0": ("Fri_Sep__1_21:08:03_CDT_2017", "9.0.176"),
    "9.1": ("Fri_Nov__3_21:07:56_CDT_2017", "9.1.85"),
    "9.2": ("Tue_Jun_12_23:08:12_CDT_2018", "9.2.148"),
}
SHELLS = [shell for shell in ("bash", "dash") if shutil.which(shell)]
# Variables a shell sets or changes by itself; everything else must come back exactly.
SHELL_OWN = {"_", "PWD", "OLDPWD", "SHLVL"}


@pytest.fixture(scope="module")
def prefixes(tmp_path_factory):
    """One prefix per CUDA version, with nvcc_linux-64 of that version installed from a fresh channel."""
    tmp = tmp_path_factory.mktemp("nvcc")
    channel = tmp / "channel"
    assert main(["build", str(ROOT / "recipes" / "nvcc"), "--target-platform", "linux-64",
                 "--channel-dir", str(channel)]) == 0
    out = {}
    for version in GCC_MAX:
        prefix = tmp / ("env-" + version)
        records = asyncio.run(rattler.solve(sources=[rattler.Channel(channel.as_uri())],
                                            specs=[f"nvcc_linux-64 {version}.*"],
                                            platforms=["linux-64", "noarch"], virtual_packages=[]))
        asyncio.run(rattler.install(records, prefix, cache_dir=tmp / "pkgs", show_progress=False))
        out[version] = prefix
    return out


def fake_toolkit(root: Path, version: str, nvcc_output=None) -> Path:
    """A CUDA toolkit folder as far as activation can tell: bin/nvcc and the runtime header."""
    home = root / ("cuda-" + version)
    (home / "bin").mkdir(parents=True)
    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("/* fake */\n")
    if nvcc_output is None:
        built, full = NVCC_RELEASES[version]
        nvcc_output = ("nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2018 NVIDIA Corporation\n"
                       f"Built on {built}\nCuda compilation tools, release {version}, V{full}\n")
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\ncat <<'EOF'\n{nvcc_output}EOF\n")
    nvcc.chmod(0o755)
    return home


def fake_gcc(folder: Path, version: str, name="gcc") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    gcc = folder / name
    gcc.write_text("#!/bin/sh\n"
                   "case \"$1\" in\n"
                   f"  --version) echo 'gcc (GCC) {version}'; echo 'Copyright (C) 2017 FSF' ;;\n"
                   f"  -dumpfullversion|-dumpversion) echo '{version}' ;;\n"
                   "  *) echo \"fake gcc: $*\" >&2; exit 1 ;;\n"
                   "esac\n")
    gcc.chmod(0o755)
    return gcc


class Run:
    """What one shell session did: exit statuses of each step, stderr, and `env` snapshots."""

    def __init__(self, out: Path, proc):
        self.stderr = proc.stderr
        self.rc = [int(line.split("=")[1]) for line in read(out / "rc").split()]
        self.snaps = {p.name: parse_env(p.read_text()) for p in out.iterdir() if p.name.startswith("env")}
        self.leftovers = read(out / "leftovers").split() if (out / "leftovers").exists() else None
        self.nvcc = read(out / "nvcc").strip() or None


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def parse_env(text):
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k: v for k, v in pairs if k not in SHELL_OWN}


def source(shell, prefix, body, env, tmp_path):
    """Run `body` in `shell`, with helpers: $ACT and $DEACT (the installed scripts), snap N, status STEP RC,
    leftovers (helper variables or functions the scripts left in the shell)."""
    out = tmp_path / ("out-" + shell)
    out.mkdir(parents=True)
    script = "\n".join([
        "set -u",
        'ACT="%s"' % (prefix / "etc/conda/activate.d/~nvcc_linux-64_activate.sh"),
        'DEACT="%s"' % (prefix / "etc/conda/deactivate.d/~nvcc_linux-64_deactivate.sh"),
        f'OUT="{out}"',
        'snap() { env > "$OUT/env$1"; }',
        'status() { echo "$1=$2" >> "$OUT/rc"; }',
        # conda sources the scripts in the user's shell: no helper may stay behind in it.
        ('leftovers() { set | grep -E "^_tw_" | cut -d= -f1 > "$OUT/leftovers";'
        ' command -v _torchwin_nvcc_activate _torchwin_nvcc_deactivate >> "$OUT/leftovers" || true; }'),
        body,
    ])
    proc = subprocess.run([shell, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return Run(out, proc)


def base_env(tmp_path, path, **extra):
    env = {"PATH": path, "HOME": str(tmp_path), "LC_ALL": "C"}
    env.update(extra)
    return env


CYCLE = """\
snap 0
. "$ACT"; status activate $?
snap 1
command -v nvcc > "$OUT/nvcc"
. "$ACT"; status again $?
snap 2
. "$DEACT"; status deactivate $?
snap 3
leftovers
"""


@pytest.mark.skipif(not Path("/usr/local/cuda/bin/nvcc").exists(), reason="no /usr/local/cuda")
@pytest.mark.parametrize("shell", SHELLS)
def test_the_9_0_package_refuses_the_cuda_toolkit_of_this_machine(prefixes, tmp_path, shell):
    nvcc = subprocess.run(["/usr/local/cuda/bin/nvcc", "--version"], capture_output=True, text=True,
                          check=True)
    found = re.search(r"release (\d+\.\d+)", nvcc.stdout).group(1)
    assert found != "9.0"
    env = base_env(tmp_path, "/usr/local/cuda/bin:/usr/bin:/bin")
    run = source(shell, prefixes["9.0"], CYCLE, env, tmp_path)
    assert run.rc == [1, 1, 0], run.stderr
    messages = run.stderr.strip().splitlines()
    assert len(messages) == 2 and messages[0] == messages[1], "one message per attempt"
    assert "nvcc_linux-64 9.0:" in messages[0] and "/usr/local/cuda" in messages[0]
    assert f"is CUDA {found}, but this package is for CUDA 9.0" in messages[0]
    # a refused activation changes nothing, and deactivation then has nothing to undo
    assert run.snaps["env0"] == run.snaps["env1"] == run.snaps["env3"]
    assert run.leftovers == []


@pytest.mark.parametrize("shell", SHELLS)
def test_activate_twice_then_deactivate(prefixes, tmp_path, shell):
    home = fake_toolkit(tmp_path / "cuda", "9.0")
    bin_dir = tmp_path / "bin"
    fake_gcc(bin_dir, "6.4.0")
    env = base_env(tmp_path, f"{bin_dir}:/usr/bin:/bin", CUDA_PATH_V9_0=str(home))
    run = source(shell, prefixes["9.0"], CYCLE, env, tmp_path)
    assert run.rc == [0, 0, 0], run.stderr
    assert run.stderr == ""
    before, active = run.snaps["env0"], run.snaps["env1"]
    for name in ("CUDA_HOME", "CUDA_PATH", "CUDA_TOOLKIT_ROOT_DIR"):
        assert name not in before and active[name] == str(home)
    assert active["PATH"] == "{}/bin:{}".format(home, before["PATH"])
    assert run.nvcc == f"{home}/bin/nvcc"
    # activating again changes nothing (PATH does not grow); deactivating restores the environment exactly
    assert run.snaps["env2"] == active
    assert run.snaps["env3"] == before
    assert run.leftovers == []


def test_deactivation_restores_old_values_and_keeps_what_conda_changed(prefixes, tmp_path):
    home = fake_toolkit(tmp_path / "cuda", "9.0")
    bin_dir = tmp_path / "bin"
    fake_gcc(bin_dir, "6.4.0")
    env = base_env(tmp_path, f"{bin_dir}:/env/bin:/usr/bin:/bin", CUDA_PATH_V9_0=str(home),
                   CUDA_HOME="/opt/old-cuda", CUDA_TOOLKIT_ROOT_DIR="")
    body = """\
snap 0
. "$ACT"; status activate $?
snap 1
# what conda does before it runs deactivation scripts: drop the environment's folder from PATH
PATH=$(echo "$PATH" | sed 's#:/env/bin##')
. "$DEACT"; status deactivate $?
snap 3
"""
    run = source("bash", prefixes["9.0"], body, env, tmp_path)
    assert run.rc == [0, 0], run.stderr
    assert run.snaps["env1"]["CUDA_HOME"] == str(home)
    after = run.snaps["env3"]
    assert after["CUDA_HOME"] == "/opt/old-cuda"
    assert after["CUDA_TOOLKIT_ROOT_DIR"] == "", "set-but-empty stays set"
    assert "CUDA_PATH" not in after, "unset stays unset"
    assert after["PATH"] == f"{bin_dir}:/usr/bin:/bin"


@pytest.mark.parametrize("version", sorted(GCC_MAX))
def test_each_cuda_version_accepts_its_newest_gcc_and_refuses_the_next(prefixes, tmp_path, version):
    home = fake_toolkit(tmp_path / "cuda", version)
    newest, too_new = GCC_MAX[version], GCC_MAX[version] + 1
    fake_gcc(tmp_path / "ok", f"{newest}.4.0")
    fake_gcc(tmp_path / "new", f"{too_new}.3.0")
    var = "CUDA_PATH_V" + version.replace(".", "_")
    body = '. "$ACT"; status activate $?\n'
    ok = source("bash", prefixes[version], body, base_env(tmp_path, f"{tmp_path}/ok:/usr/bin:/bin",
                                                            **{var: str(home)}), tmp_path / "a")
    assert ok.rc == [0], ok.stderr
    refused = source("bash", prefixes[version], body, base_env(tmp_path, f"{tmp_path}/new:/usr/bin:/bin",
                                                                 **{var: str(home)}), tmp_path / "b")
    assert refused.rc == [1]
    assert refused.stderr.strip() == (
        f"nvcc_linux-64 {version}: host compiler 'gcc' is gcc {too_new}.3.0, but CUDA {version} supports "
        f"gcc {newest} at most; install gcc {newest} (e.g. the gcc_linux-64 {newest} package) "
        "and set CC to it.")


def test_the_compiler_in_CC_is_the_one_checked(prefixes, tmp_path):
    home = fake_toolkit(tmp_path / "cuda", "9.0")
    fake_gcc(tmp_path / "path", "12.2.0")
    old = fake_gcc(tmp_path / "cc", "5.5.0", name="x86_64-conda-linux-gnu-cc")
    env = base_env(tmp_path, f"{tmp_path}/path:/usr/bin:/bin", CUDA_PATH_V9_0=str(home), CC=str(old))
    assert source("bash", prefixes["9.0"], '. "$ACT"; status activate $?', env, tmp_path / "a").rc == [0]
    env["CC"] = str(tmp_path / "missing" / "gcc")
    run = source("bash", prefixes["9.0"], '. "$ACT"; status activate $?', env, tmp_path / "b")
    assert run.rc == [1]
    assert "no host compiler: '{}' not found".format(env["CC"]) in run.stderr


@pytest.mark.parametrize("variable", ["CUDA_PATH_V9_0", "CUDA_HOME"])
def test_an_explicit_folder_without_nvcc_is_reported_not_skipped(prefixes, tmp_path, variable):
    env = base_env(tmp_path, "/usr/local/cuda/bin:/usr/bin:/bin", **{variable: str(tmp_path / "nothing")})
    run = source("bash", prefixes["9.0"], '. "$ACT"; status activate $?', env, tmp_path)
    assert run.rc == [1]
    assert run.stderr.strip() == (f"nvcc_linux-64 9.0: {variable} points at {tmp_path / 'nothing'}, "
                                  "which has no bin/nvcc; set it to the folder of a CUDA 9.0 toolkit.")


def test_an_nvcc_without_a_release_line_is_of_unknown_version(prefixes, tmp_path):
    home = fake_toolkit(tmp_path / "cuda", "9.0", nvcc_output="nvcc: something else\n")
    env = base_env(tmp_path, "/usr/bin:/bin", CUDA_HOME=str(home))
    run = source("bash", prefixes["9.0"], '. "$ACT"; status activate $?', env, tmp_path)
    assert run.rc == [1]
    assert "(from CUDA_HOME) is CUDA of unknown version, but this package is for CUDA 9.0" in run.stderr
