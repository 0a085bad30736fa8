"""One build of `torchwin wheel`: the build folder, its steps, progress, and the driver call.

The build folder holds everything but the source: `prefix/` (the host prefix), `toolchain/` (the
compiler wrappers), `dist/` (the wheel), `logs/`, `test-wheel/` (a fresh environment for the
package test) and `result.json`. Every step is safe to repeat, so running the same command again
resumes: the host prefix is reused when its requirements are unchanged, the source tree keeps
upstream's own `build/` folder (CMake and Ninja redo only what changed) and ccache answers every
compile it has seen.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from torchwin.errors import Failure, UserError
from torchwin.wheel import host_prefix

DRIVER = "build_driver.py"
RUN_TEST = "run_test.py"
# Lines of the build log that tell how far it is: Ninja's `[N/M]`, make's `[ NN%]`.
NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
MAKE_PERCENT = re.compile(r"^\[\s*(\d+)%\]")
# The machine's variables the build may keep (the engine hands its script a filtered environment too).
KEPT_VARIABLES = ("HOME", "LANG", "LC_ALL", "TMPDIR", "TERM", "USER", "LOGNAME")


def engine_environment(variant, source: Path, prefix: Path, recipe_dir: Path) -> dict:
    """What the engine gives recipes/pytorch's build script: its folders and the recipe's `script.env`."""
    build = variant.rendered.recipe.build.to_dict() if variant.rendered is not None else {}
    script_env = ((build.get("script") or {}).get("env") or {}) if isinstance(build.get("script"), dict) else {}
    env = {name: str(value) for name, value in script_env.items() if str(value) != ""}
    python = prefix / "bin" / "python"
    env.update({
        "SRC_DIR": str(source),
        "PREFIX": str(prefix),
        # The engine's build environment holds the compilers and cmake; here they are the machine's.
        "BUILD_PREFIX": str(prefix),
        "RECIPE_DIR": str(recipe_dir),
        "PYTHON": str(python),
        "PKG_NAME": variant.name,
        "PKG_VERSION": variant.version,
        "PKG_BUILDNUM": str(variant.build_number),
        "target_platform": variant.subdir,
    })
    return env


def test_environment(variant) -> dict:
    """The package test's variables as the recipe renders them (TORCHWIN_EXPECT_*)."""
    env = {}
    for test in variant.tests:
        script = test.get("script") if isinstance(test, dict) else None
        if isinstance(script, dict):
            env.update({k: str(v) for k, v in (script.get("env") or {}).items()})
    return env


class Progress:
    """One status line for a long step: rewritten in place on a terminal, a plain line now and then elsewhere."""

    def __init__(self, what: str, stream=None, interval: float = 60.0):
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self.start = time.monotonic()
        self.last_print = 0.0
        self.last_fraction = -1.0
        self.status = "starting"

    def update(self, line: str) -> None:
        match = NINJA_STEP.match(line)
        fraction = None
        if match:
            done, total = int(match.group(1)), int(match.group(2))
            fraction = done / total if total else 0.0
            self.status = "%d/%d compiled (%d%%)" % (done, total, 100 * fraction)
        else:
            match = MAKE_PERCENT.match(line)
            if match:
                fraction = int(match.group(1)) / 100.0
                self.status = "%s%% of a library" % match.group(1)
            elif line.startswith(("building '", "Building ")) or line.startswith("-- Configuring"):
                self.status = line.strip()[:60]
        now = time.monotonic()
        step = fraction is not None and (fraction - self.last_fraction >= 0.1 or self.last_fraction < fraction >= 1.0)
        if self.tty or now - self.last_print >= self.interval or step:
            self.show(now)
            if fraction is not None and step:
                self.last_fraction = fraction

    def show(self, now=None) -> None:
        now = now or time.monotonic()
        text = "%s: %s, %s elapsed" % (self.what, self.status, _clock(now - self.start))
        if self.tty:
            self.stream.write("\r" + text[:_width() - 1].ljust(_width() - 1))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.last_print = now

    def done(self, ok: bool) -> float:
        elapsed = time.monotonic() - self.start
        text = "%s: %s in %s" % (self.what, "done" if ok else "FAILED", _clock(elapsed))
        if self.tty:
            self.stream.write("\r" + text.ljust(_width() - 1) + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        return elapsed


def _width() -> int:
    try:
        return max(40, os.get_terminal_size().columns)
    except OSError:
        return 80


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


class TreeMemory:
    """Samples the summed resident memory of a process and all its descendants (Linux /proc)."""

    def __init__(self, pid: int, every: float = 2.0):
        self.pid = pid
        self.every = every
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pid))
            self._stop.wait(self.every)


def tree_rss_kb(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            with open("/proc/%s/statm" % entry) as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


def run_logged(argv, env, cwd, log_path: Path, progress: Progress | None = None) -> tuple[int, float, int]:
    """Run argv with its output in log_path (and fed to progress); returns (exit code, seconds, peak MB)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log_path, "a", encoding="utf-8", errors="replace") as log:
        log.write("$ %s\n" % " ".join(str(a) for a in argv))
        log.flush()
        try:
            proc = subprocess.Popen([str(a) for a in argv], env=env, cwd=str(cwd), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as exc:
            raise Failure("could not start %s: %s" % (argv[0], exc.strerror)) from exc
        with TreeMemory(proc.pid) as memory:
            for line in proc.stdout:
                log.write(line)
                if progress is not None:
                    progress.update(line)
            code = proc.wait()
    return code, time.monotonic() - start, memory.peak_kb // 1024


def last_error_line(log_path: Path) -> str:
    """The line of the log a person needs first: the driver's own error, else the first compiler error."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        if line.startswith("torchwin build driver: error:"):
            return line[len("torchwin build driver: error:"):].strip()
    for line in lines:
        if re.search(r"(error:|Error \d+|FAILED:|CMake Error)", line):
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else ""


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def wheel_file(dist: Path, since: float) -> Path:
    wheels = sorted((p for p in dist.glob("torch-*.whl") if p.stat().st_mtime >= since - 1),
                    key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise Failure("the build finished but wrote no torch wheel into %s" % dist)
    return wheels[-1]


def test_wheel(python: Path, wheel: Path, build_dir: Path, runtime: list[str], recipe_dir: Path,
               test_env: dict) -> dict:
    """Install the wheel into a fresh environment of the same Python and run the package test there.

    The binaries link MKL and OpenMP dynamically, as the conda package's do (its run requirement
    `mkl`): here the PyPI wheels of those put them in the environment's lib/, on LD_LIBRARY_PATH,
    the way the 2017 install instructions had users install MKL beside the wheel.
    """
    folder = build_dir / "test-wheel"
    log_path = build_dir / "logs" / "test-wheel.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        # Always fresh: the point is a clean install of this wheel.
        interpreter = host_prefix.make_venv(python, folder, [], log)
        (folder / host_prefix.MARKER).unlink()
        code = subprocess.call([str(interpreter), "-m", "pip", "install", "--no-input", str(wheel), *runtime],
                               stdout=log, stderr=subprocess.STDOUT, env=host_prefix.pip_environment())
    if code != 0:
        raise Failure("could not install %s into a fresh environment; see %s" % (wheel.name, log_path))
    env = dict(os.environ)
    env.update(test_env)
    env["LD_LIBRARY_PATH"] = str(folder / "lib") + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    report_path = build_dir / "logs" / "run_test-wheel.json"
    with open(report_path, "w") as out, open(log_path, "a") as log:
        # From another folder than the source, so `import torch` finds the installed wheel.
        code = subprocess.call([str(interpreter), str(recipe_dir / RUN_TEST), "--json"], stdout=out, stderr=log,
                               env=env, cwd=str(folder))
    try:
        report = json.loads(report_path.read_text())
    except ValueError:
        raise Failure("the package test printed no report (exit %d); see %s" % (code, log_path)) from None
    report["exit_code"] = code
    return report


def run_test_arguments(test_env: dict) -> list[str]:
    """The recipe's TORCHWIN_EXPECT_* test variables as run_test.py options."""
    args = []
    for variable, option in (("TORCHWIN_EXPECT_VERSION", "--expect-version"),
                             ("TORCHWIN_EXPECT_VARIANT", "--expect-variant"),
                             ("TORCHWIN_EXPECT_ARCHS", "--expect-archs")):
        if test_env.get(variable):
            args += [option, test_env[variable]]
    if test_env.get("TORCHWIN_EXPECT_MAGMA") == "1":
        args.append("--expect-magma")
    return args


def summary_counts(report: dict) -> dict:
    summary = report.get("summary") or {}
    return {k: int(summary.get(k, 0)) for k in ("passed", "failed", "skipped")}


def check_source(source: Path) -> Path:
    source = source.resolve()
    if not (source / "setup.py").is_file():
        raise UserError("--source %s: no setup.py there (expected a PyTorch checkout with its submodules)" % source)
    return source
