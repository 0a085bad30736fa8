"""Smoke test for an installed torch: the package test of recipes/pytorch and `torchwin smoke`.

Usage:
    python run_test.py [--require-cuda] [--expect-version V] [--expect-variant cpu|cuda|cudaX.Y]
                       [--expect-magma] [--timeout-scale X] [--only NAMES] [--json]

Every option also has an environment variable, so a recipe's test section or a CI job can
set it without editing the command line (a flag wins over the variable):

    TORCHWIN_REQUIRE_CUDA=1      CUDA checks FAIL instead of SKIP when no GPU is visible
                                 (ignored when the expected variant is cpu, so a GPU job can
                                 set it for every package it tests)
    TORCHWIN_EXPECT_VERSION=V    torch.__version__ must be V (a local part like "+cpu" is ignored), or
                                 `facts:TABLE`: what build_driver.py stamps for upstream/TABLE.json
                                 (0.3's Windows fork: 0.3.0b0+591e73e)
    TORCHWIN_EXPECT_VARIANT=...  cpu: CUDA must not be compiled in; cuda: CUDA and cuDNN must be;
                                 cuda9.0: and torch.version.cuda must be 9.0
    TORCHWIN_EXPECT_MAGMA=1      the MAGMA check FAILs instead of SKIPs when MAGMA is not compiled in
    TORCHWIN_EXPECT_ARCHS=LIST   the GPU architectures that must be compiled in, as TORCH_CUDA_ARCH_LIST
                                 spells them (3.0;3.5;...;7.0+PTX), or `facts:X.Y.Z`: what build_driver.py
                                 next to this file derives from upstream/X.Y.Z.json for the expected CUDA
    TORCHWIN_EXPECT_MKLDNN=...   1: torch.backends.mkldnn.is_available() must be True; 0: must be False;
                                 `facts:X.Y.Z`: what build_driver.py next to this file decides for this
                                 platform from upstream/X.Y.Z.json (MKL-DNN on Windows from 1.5.0 only)
    TORCHWIN_SMOKE_TIMEOUT_SCALE=X  multiply every check's time bound by X (e.g. 3 on a slow CI machine)

Each check prints PASS, FAIL or SKIP, its time and a reason; the last line reads
`N passed, N failed, N skipped`. The exit code is 0 when nothing failed, 1 when something did,
2 for bad options. With --json the progress goes to stderr and stdout carries one JSON document.

How it runs: this process never imports torch. It starts child processes of the same
interpreter (`run_test.py --child NAMES --result-file F`) that run the checks and append one
JSON line per result to F. A check that crashes the interpreter (an illegal instruction, a
DLL that fails to load) or hangs (a deadlock) is reported as a FAIL with the reason, and the
checks after it run in a fresh child. The DataLoader and backward-regression checks always get
a child of their own: they need the `if __name__ == '__main__':` entry point below, because
DataLoader workers are started with the spawn method, as on Windows, and re-import this file.

The script supports torch 0.3 to 2.x by detecting features (torch.tensor and dtypes, Variables
as tensors, torch.no_grad or volatile, torch.version.cuda, torch.backends.mkl, TF32 switches,
linalg APIs) instead of assuming the newest API. On 0.3 (the 2017 Windows builds and upstream's
tags) the limits those builds documented are expectations: no torch.distributed, NCCL or MAGMA
on Windows is a PASS, not a failure. It must stay valid Python 3.5
and use only the standard library and torch: it runs under each variant's own Python.
"""

# ruff: noqa: UP031, BLE001
# %-formatting because this runs on Python 3.5 (no f-strings); blind excepts because a smoke
# test must turn whatever a broken torch throws into a FAIL line.

import argparse
import collections
import gc
import importlib
import inspect
import io
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"

ENV_REQUIRE_CUDA = "TORCHWIN_REQUIRE_CUDA"
ENV_EXPECT_VERSION = "TORCHWIN_EXPECT_VERSION"
ENV_EXPECT_VARIANT = "TORCHWIN_EXPECT_VARIANT"
ENV_EXPECT_MAGMA = "TORCHWIN_EXPECT_MAGMA"
ENV_EXPECT_ARCHS = "TORCHWIN_EXPECT_ARCHS"
ENV_EXPECT_MKLDNN = "TORCHWIN_EXPECT_MKLDNN"
ENV_TIMEOUT_SCALE = "TORCHWIN_SMOKE_TIMEOUT_SCALE"

# A DataLoader worker that sends nothing for this long makes the DataLoader raise instead of hang.
WORKER_BATCH_TIMEOUT_S = 60
# The memory regression check: batches of this size cross the worker boundary every epoch,
# and the main process may grow by at most MEMORY_BOUND_MIB after the warm-up epoch. A leak
# of the batches themselves (the 2017 bug) grows it by MEASURED_EPOCHS x 16 MiB = 48 MiB.
MEMORY_ITEMS, MEMORY_ITEM_FLOATS, MEMORY_BATCH = 64, 65536, 8
MEMORY_MEASURED_EPOCHS = 3
MEMORY_BOUND_MIB = 24
# Seconds a child process may take to start (interpreter, this script) before its first check
# starts; not scaled with --timeout-scale, which is about the checks.
STARTUP_ALLOWANCE_S = 60

WORKER_ERROR_MARKER = "torchwin-smoke: deliberate error in a DataLoader worker"
BACKWARD_ERROR_MARKER = "torchwin-smoke: deliberate error in backward"


class Skip(Exception):
    """The check does not apply here; the message says why."""


class CheckFailed(Exception):
    """The check ran and found something wrong; the message says what."""


Check = collections.namedtuple("Check", "name func timeout isolated hang_hint")
CHECKS = []


def check(name, timeout, isolated=False, hang_hint=""):
    """Register a check. `timeout` bounds its wall time in seconds (hangs become FAILs);
    `isolated` checks get a child process of their own."""

    def register(func):
        CHECKS.append(Check(name, func, timeout, isolated, hang_hint))
        return func

    return register


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_variant(value, source):
    """'cpu', 'cuda' or 'cudaX.Y' (also 'cudaXY', as in build strings like cuda90)."""
    value = value.strip().lower()
    if value in ("cpu", "cuda"):
        return value
    if value.startswith("cuda"):
        rest = value[4:]
        if "." not in rest and rest.isdigit() and len(rest) >= 2:
            rest = rest[:-1] + "." + rest[-1:]
        parts = rest.split(".")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return "cuda" + rest
    raise ValueError("%s=%r: expected cpu, cuda or cudaX.Y (e.g. cuda9.0)" % (source, value))


def make_parser():
    parser = argparse.ArgumentParser(
        prog="run_test.py",
        description="Check that the torch in this environment works (CPU, DataLoader, CUDA).",
    )
    add_options(parser)
    # Internal: run the named checks in this process and append results to a file.
    parser.add_argument("--child", metavar="NAMES", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", metavar="PATH", help=argparse.SUPPRESS)
    return parser


# (flag, takes a value): the options users give, here and to `torchwin smoke`, which adds them to its
# own parser with add_options() and passes them back with given_argv() (one option set, one help).
OPTIONS = (("--require-cuda", False), ("--expect-version", True), ("--expect-variant", True),
           ("--expect-magma", False), ("--expect-archs", True), ("--expect-mkldnn", True),
           ("--timeout-scale", True), ("--only", True), ("--json", False))


def add_options(parser):
    parser.add_argument("--require-cuda", action="store_true", default=None,
                        help="CUDA checks FAIL instead of SKIP when no GPU is visible (env %s=1)" % ENV_REQUIRE_CUDA)
    parser.add_argument("--expect-version", metavar="V",
                        help="torch.__version__ must be V; a local part such as +cpu is ignored (env %s)"
                        % ENV_EXPECT_VERSION)
    parser.add_argument("--expect-variant", metavar="KIND",
                        help="cpu (CUDA must not be compiled in), cuda (CUDA and cuDNN must be), or cudaX.Y "
                        "such as cuda9.0 (and of that version) (env %s)" % ENV_EXPECT_VARIANT)
    parser.add_argument("--expect-magma", action="store_true", default=None,
                        help="on a GPU, FAIL instead of SKIP when MAGMA is not compiled in (env %s=1)"
                        % ENV_EXPECT_MAGMA)
    parser.add_argument("--expect-archs", metavar="LIST",
                        help="GPU architectures that must be compiled in, e.g. 3.0;3.5;7.0+PTX, or facts:X.Y.Z "
                        "(env %s)" % ENV_EXPECT_ARCHS)
    parser.add_argument("--expect-mkldnn", metavar="1|0|facts:X.Y.Z",
                        help="whether MKL-DNN must be compiled in (env %s)" % ENV_EXPECT_MKLDNN)
    parser.add_argument("--timeout-scale", metavar="X", type=float,
                        help="multiply every check's time bound by X, e.g. 3 on a slow machine (env %s)"
                        % ENV_TIMEOUT_SCALE)
    parser.add_argument("--only", metavar="NAMES",
                        help="comma-separated checks or groups: import, version, config, cpu, cuda, "
                        "dataloader, regression, or full names such as cpu.autograd")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout: every check, the summary, torch's details")
    return parser


def given_argv(args):
    """The command line that gives this script the options parsed into `args` (by add_options)."""
    argv = []
    for flag, takes_value in OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if takes_value and value is not None:
            argv += [flag, str(value)]
        elif not takes_value and value:
            argv.append(flag)
    return argv


def resolve_expectation(parser, args, name, variable, parse):
    """args.NAME from its flag, else from the environment variable; parse(value, source) checks it.

    A bad value is a usage error that names where it came from (the flag or the variable).
    """
    source = "--" + name.replace("_", "-")
    if not getattr(args, name):
        setattr(args, name, os.environ.get(variable, "").strip() or None)
        source = variable
    value = getattr(args, name)
    if value:
        try:
            setattr(args, name, parse(value, source))
        except ValueError as exc:
            parser.error(str(exc))


def resolve_options(parser, args):
    """Merge flags with environment variables; a flag wins."""
    require_flag = bool(args.require_cuda)
    if args.require_cuda is None:
        args.require_cuda = env_flag(ENV_REQUIRE_CUDA)
    if args.expect_magma is None:
        args.expect_magma = env_flag(ENV_EXPECT_MAGMA)
    resolve_expectation(parser, args, "expect_version", ENV_EXPECT_VERSION,
                        lambda value, source: facts_version(value, source) if value.startswith("facts:") else value)
    resolve_expectation(parser, args, "expect_variant", ENV_EXPECT_VARIANT, parse_variant)
    resolve_expectation(parser, args, "expect_archs", ENV_EXPECT_ARCHS,
                        lambda value, source: expected_archs(value, args.expect_variant, source))
    resolve_expectation(parser, args, "expect_mkldnn", ENV_EXPECT_MKLDNN, expected_mkldnn)
    if args.timeout_scale is None:
        raw = os.environ.get(ENV_TIMEOUT_SCALE, "").strip()
        try:
            args.timeout_scale = float(raw) if raw else 1.0
        except ValueError:
            parser.error("%s=%r: expected a number such as 2 or 0.5" % (ENV_TIMEOUT_SCALE, raw))
    if not args.timeout_scale > 0:
        parser.error("the timeout scale must be a positive number, not %r" % args.timeout_scale)
    if args.expect_variant == "cpu":
        if require_flag:
            parser.error("--require-cuda contradicts --expect-variant cpu (or %s=cpu)" % ENV_EXPECT_VARIANT)
        # A GPU job sets the variable for every package it tests; it does not apply to CPU builds.
        args.require_cuda = False
    return args


ARCH_ENTRY = r"^\d\.\d(\+PTX)?$"


def expected_mkldnn(value, source):
    """True/False: whether MKL-DNN must be compiled in; `facts:X.Y.Z` asks the build driver's rule."""
    if value in ("1", "0"):
        return value == "1"
    if not value.startswith("facts:"):
        raise ValueError("%s=%r: expected 1, 0 or facts:X.Y.Z" % (source, value))
    build_driver, here = import_build_driver(source, value)
    try:
        facts = build_driver.load_facts(here, value[len("facts:"):])
    except build_driver.BuildConfigError as exc:
        raise ValueError("%s=%s: %s" % (source, value, exc))
    return build_driver.mkldnn_on(facts, sys.platform == "win32")


def expected_archs(value, variant, source):
    """The TORCH_CUDA_ARCH_LIST a build promises: given as is, or `facts:X.Y.Z` (the build driver's rule)."""
    import re

    if value.startswith("facts:"):
        release = value[len("facts:"):]
        if not (variant or "").startswith("cuda") or len(variant) <= 4:
            raise ValueError("%s=%s needs the CUDA version too (--expect-variant cudaX.Y or %s)"
                             % (source, value, ENV_EXPECT_VARIANT))
        build_driver, here = import_build_driver(source, value)
        try:
            facts = build_driver.load_facts(here, release)
            value = build_driver.cuda_arch_list(facts, variant[4:])
        except (build_driver.BuildConfigError, KeyError) as exc:
            raise ValueError("%s=%s: %s" % (source, value, exc))
    entries = [e.strip() for e in value.split(";") if e.strip()]
    bad = [e for e in entries if not re.match(ARCH_ENTRY, e)]
    if bad or not entries:
        raise ValueError("%s=%r: expected architectures such as 3.0;3.5;7.0+PTX" % (source, value))
    return ";".join(entries)


def import_build_driver(source, value):
    """(build_driver module, its folder): the recipe ships it next to this file for facts: values."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    try:
        import build_driver
    except ImportError:
        raise ValueError("%s=%s: build_driver.py is not next to %s" % (source, value, __file__))
    finally:
        sys.path.remove(here)
    return build_driver, here


def facts_version(value, source):
    """`facts:TABLE`: the torch.__version__ the build driver stamps for upstream/TABLE.json.

    A build of a fork's commit (0.3's Windows builds) reports the fork's own version and commit,
    0.3.0b0+591e73e, not the conda package's 0.3.0.
    """
    table = value[len("facts:"):]
    build_driver, here = import_build_driver(source, value)
    try:
        facts = build_driver.load_facts(here, table)
        return build_driver.torch_version({"version": facts["release"]}, facts)
    except (build_driver.BuildConfigError, KeyError) as exc:
        raise ValueError("%s=%s: %s" % (source, value, exc))


def arch_names(arch_list):
    """`3.5;7.0+PTX` -> ['sm_35', 'sm_70', 'compute_70']: the names torch.cuda.get_arch_list() uses."""
    names = []
    for entry in arch_list.split(";"):
        number = entry.split("+")[0].replace(".", "")
        names.append("sm_" + number)
        if entry.endswith("+PTX"):
            names.append("compute_" + number)
    return names


def compiled_archs(torch):
    """The architectures compiled in, as get_arch_list() names them, or None where torch cannot say.

    torch._C._cuda_getArchFlags (1.6 on) reads them without a GPU; get_arch_list() needs one.
    """
    flags = getattr(getattr(torch, "_C", None), "_cuda_getArchFlags", None)
    text = flags() if flags is not None else None
    if text:
        return text.split()
    get = getattr(getattr(torch, "cuda", None), "get_arch_list", None)
    if get is not None:
        found = get()
        return list(found) if found else None
    return None


def select_checks(parser, only):
    """The checks named by --only (exact names, or groups: `cuda` selects every cuda.* check)."""
    if not only:
        return list(CHECKS)
    wanted = [item.strip().rstrip(".") for item in only.split(",") if item.strip()]
    unknown = [item for item in wanted
               if not any(chk.name == item or chk.name.startswith(item + ".") for chk in CHECKS)]
    if unknown or not wanted:
        parser.error("--only %s: unknown check %s; choose from %s"
                     % (only, ", ".join(unknown) or "(none given)", ", ".join(chk.name for chk in CHECKS)))
    return [chk for chk in CHECKS
            if any(chk.name == item or chk.name.startswith(item + ".") for item in wanted)]


def option_argv(args):
    """The resolved options as flags, for the child processes."""
    argv = []
    if args.require_cuda:
        argv.append("--require-cuda")
    if args.expect_magma:
        argv.append("--expect-magma")
    if args.expect_version:
        argv += ["--expect-version", args.expect_version]
    if args.expect_variant:
        argv += ["--expect-variant", args.expect_variant]
    if args.expect_archs:
        argv += ["--expect-archs", args.expect_archs]
    if args.expect_mkldnn is not None:
        argv += ["--expect-mkldnn", "1" if args.expect_mkldnn else "0"]
    argv += ["--timeout-scale", repr(args.timeout_scale)]
    return argv


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the checks
# ---------------------------------------------------------------------------------------------

def describe_exception(exc):
    """One line: the exception type, its message, and where in this file it surfaced."""
    text = str(exc).strip().replace("\n", " | ")
    if len(text) > 400:
        text = text[:400] + "..."
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.basename(__file__)
    for frame in reversed(frames):
        if os.path.basename(frame[0]) == here:
            where = " (%s line %d, in %s)" % (here, frame[1], frame[2])
            break
    return "%s: %s%s" % (type(exc).__name__, text or "(no message)", where)


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def flat(values):
    """Flatten nested lists (from Tensor.tolist())."""
    if isinstance(values, (list, tuple)):
        out = []
        for item in values:
            out.extend(flat(item))
        return out
    return [values]


def expect_close(what, got, want, tol):
    """Compare nested lists of numbers with an absolute tolerance."""
    got_flat, want_flat = flat(got), flat(want)
    expect(len(got_flat) == len(want_flat),
           "%s: got %d values, expected %d" % (what, len(got_flat), len(want_flat)))
    for g, w in zip(got_flat, want_flat):
        if not (abs(g - w) <= tol):  # also catches NaN
            raise CheckFailed("%s: got %r, expected %r (tolerance %g)" % (what, got, want, tol))


def max_abs_diff(torch, a, b):
    return scalar((data_of(torch, a).double() - data_of(torch, b).double()).abs().max())


# ---- One spelling for 0.3 and 0.4+: 0.3's tensors are not Variables, have no dtypes, no
# torch.tensor(), no .item(); 0.4 merged Variable into Tensor. ---------------------------------

KINDS = {"double": ("float64", "DoubleTensor"), "float": ("float32", "FloatTensor"), "long": ("int64", "LongTensor")}


def legacy_api(torch):
    """True for 0.3 and older, asked without computing anything: the function torch.tensor() arrived
    in 0.4 (0.3 has a submodule torch.tensor, the file torch/tensor.py, so hasattr() is not enough)."""
    return hasattr(torch, "FloatTensor") and not callable(getattr(torch, "tensor", None))


def is_legacy(torch):
    """True for torch 0.3 and older: a plain tensor is not an autograd Variable."""
    return not isinstance(torch.zeros(1), torch.autograd.Variable)


def new_tensor(torch, data, kind="double"):
    """A tensor holding `data`: torch.tensor(data, dtype=...) from 0.4, torch.DoubleTensor(data) before."""
    dtype_name, legacy_type = KINDS[kind]
    if hasattr(torch, "tensor") and hasattr(torch, dtype_name):
        return torch.tensor(data, dtype=getattr(torch, dtype_name))
    return getattr(torch, legacy_type)(data)


def variable(torch, tensor, requires_grad=False):
    """A tensor autograd sees: the tensor itself from 0.4 (requires_grad_), a Variable around it on 0.3."""
    if is_legacy(torch):
        return torch.autograd.Variable(tensor, requires_grad=requires_grad)
    return tensor.requires_grad_() if requires_grad else tensor


def data_of(torch, value):
    """The tensor behind a result: a 0.3 Variable's .data (a 0.3 Tensor raises on .data), else itself."""
    if is_legacy(torch) and isinstance(value, torch.autograd.Variable):
        return value.data
    return value.detach() if hasattr(value, "detach") and not is_legacy(torch) else value


def values(torch, value):
    """A tensor or Variable as nested lists."""
    return data_of(torch, value).tolist()


def scalar(value):
    """A Python float of a one-element result: .item() from 0.4; on 0.3 Tensor.sum() already is a
    number and a Variable's is a one-element Variable (its .data[0])."""
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item"):
        return float(value.item())
    if hasattr(value, "volatile"):  # a 0.3 Variable
        return float(value.data[0])
    return float(value[0])


def import_submodule(name):
    """torch.backends.mkl and friends are not always imported by `import torch` on old versions."""
    try:
        return importlib.import_module(name)
    except Exception:
        return None


def torch_config_text(torch):
    config = getattr(torch, "__config__", None)
    show = getattr(config, "show", None)
    if show is None:
        return None
    try:
        return str(show())
    except Exception:
        return None


def read_rss():
    """(bytes, how) for this process's resident memory, or (None, why not).

    Linux: VmRSS from /proc/self/status. Windows: WorkingSetSize from GetProcessMemoryInfo.
    Elsewhere: the peak RSS from resource.getrusage, which still grows when memory leaks.
    """
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024, "VmRSS"
    if os.name == "nt":
        import ctypes
        from ctypes import wintypes

        class Counters(ctypes.Structure):
            _fields_ = [
                ("cb", wintypes.DWORD),
                ("PageFaultCount", wintypes.DWORD),
                ("PeakWorkingSetSize", ctypes.c_size_t),
                ("WorkingSetSize", ctypes.c_size_t),
                ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
                ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                ("PagefileUsage", ctypes.c_size_t),
                ("PeakPagefileUsage", ctypes.c_size_t),
            ]

        counters = Counters()
        counters.cb = ctypes.sizeof(counters)
        get_info = ctypes.windll.psapi.GetProcessMemoryInfo
        get_info.argtypes = [wintypes.HANDLE, ctypes.POINTER(Counters), wintypes.DWORD]
        get_info.restype = wintypes.BOOL
        process = ctypes.windll.kernel32.GetCurrentProcess()
        if get_info(process, ctypes.byref(counters), counters.cb):
            return int(counters.WorkingSetSize), "WorkingSetSize"
        return None, "GetProcessMemoryInfo failed"
    try:
        import resource
    except ImportError:
        return None, "no way to read this process's memory on this platform"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS and in KiB elsewhere.
    return (peak if sys.platform == "darwin" else peak * 1024), "peak RSS (getrusage)"


def use_spawn():
    """Start DataLoader workers the way Windows does, whatever the platform's default."""
    multiprocessing.set_start_method("spawn", force=True)
    method = multiprocessing.get_start_method()
    expect(method == "spawn", "could not select the spawn start method (got %r)" % method)


# Datasets live at module level without torch base classes: spawned workers unpickle them by
# re-importing this file, which must stay importable without torch.

class SmokeDataset:
    """Item i: a vector filled with i, the index, and the pid of the process that built it."""

    def __init__(self, items, floats):
        self.items = items
        self.floats = floats

    def __len__(self):
        return self.items

    def __getitem__(self, index):
        import torch

        return torch.ones(self.floats) * float(index), index, os.getpid()


class FailingDataset(SmokeDataset):
    """Like SmokeDataset, but item 5 raises."""

    def __getitem__(self, index):
        if index == 5:
            raise ValueError(WORKER_ERROR_MARKER)
        return SmokeDataset.__getitem__(self, index)


# ---------------------------------------------------------------------------------------------
# Context: what the checks of one child process share
# ---------------------------------------------------------------------------------------------

class Context:
    def __init__(self, options):
        self.options = options
        self._torch = None
        self._import_error = None
        self._gpu = None  # None: not looked yet; otherwise (ready, why_not)
        self.info_sent = False  # the parent gets torch's details once per child

    @property
    def imported(self):
        """The torch module if a check imported it, else None."""
        return self._torch

    def import_torch(self):
        """Import torch; CheckFailed with the reason if that fails (for the import check)."""
        if self._torch is not None:
            return self._torch
        if self._import_error is not None:
            raise CheckFailed(self._import_error)
        try:
            import torch
        except (Exception, SystemExit) as exc:  # a broken module may even call sys.exit
            self._import_error = "import torch failed: " + describe_exception(exc)
            raise CheckFailed(self._import_error)
        self._torch = torch
        return torch

    def torch(self):
        """torch for the other checks: they SKIP when it did not import (the import check FAILs)."""
        try:
            return self.import_torch()
        except CheckFailed:
            raise Skip("needs torch, which did not import (see the import check)")

    def gpu(self):
        """torch when a CUDA GPU is usable; else SKIP, or FAIL with --require-cuda."""
        torch = self.torch()
        if self._gpu is None:
            self._gpu = self._probe_gpu(torch)
        ready, why = self._gpu
        if not ready:
            if self.options.require_cuda:
                raise CheckFailed("a GPU is required (--require-cuda or %s=1), but %s" % (ENV_REQUIRE_CUDA, why))
            raise Skip(why)
        return torch

    @staticmethod
    def _probe_gpu(torch):
        cuda_version = compiled_cuda(torch)
        if cuda_version is None:
            return False, "this torch is a CPU-only build (torch.version.cuda is None)"
        try:
            available = bool(torch.cuda.is_available())
            count = int(torch.cuda.device_count()) if available else 0
        except Exception as exc:
            return False, "CUDA %s build, but asking for GPUs failed: %s" % (cuda_version, describe_exception(exc))
        if not available or count == 0:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            hint = "" if visible is None else "; CUDA_VISIBLE_DEVICES=%r" % visible
            return False, ("CUDA %s build, but no GPU is visible (torch.cuda.is_available() is False%s)"
                           % (cuda_version, hint))
        return True, ""


def compiled_cuda(torch):
    """torch.version.cuda: the CUDA version compiled in, or None for a CPU build.

    0.3's torch/version.py holds only __version__: there the CUDA extension's
    _cuda_getCompiledVersion() (CUDA_VERSION, 9000 for 9.0) says it.
    """
    version = getattr(torch, "version", None)
    if version is None:
        raise CheckFailed("this torch has no torch.version module: not a complete torch install")
    if hasattr(version, "cuda"):
        return version.cuda
    compiled = getattr(getattr(torch, "_C", None), "_cuda_getCompiledVersion", None)
    if compiled is None:
        return None
    number = int(compiled())
    return "%d.%d" % (number // 1000, number % 1000 // 10)


def cuda_version_matches(have, want):
    """Whether the CUDA version `have` (torch.version.cuda) is the release `want` (X.Y): real builds
    report X.Y or X.Y.Z (upstream's 1.0.1/1.1.0 Linux wheels: 9.0.176).

    recipes/torchvision/run_test.py holds the same function (a package test ships only its own
    recipe's files); tests/recipes/test_torchvision.py keeps the two identical."""
    return have == want or (have or "").startswith(want + ".")


def torch_info(torch):
    """What the JSON report says about the torch under test; every field best effort."""
    info = collections.OrderedDict()
    version = getattr(torch, "version", None)
    for key, value in (
        ("version", lambda: str(torch.__version__)),
        ("file", lambda: str(torch.__file__)),
        ("cuda", lambda: getattr(version, "cuda", None)),
        ("git_version", lambda: getattr(version, "git_version", None)),
        ("debug", lambda: getattr(version, "debug", None)),
        ("mkl", lambda: mkl_status(torch)[0]),
        ("cudnn_compiled", lambda: cudnn_compiled(torch)),
    ):
        try:
            info[key] = value()
        except Exception:
            info[key] = None
    return info


def mkl_status(torch):
    """(True/False/None, how we know) for "is MKL compiled in"."""
    mkl = import_submodule("torch.backends.mkl")
    if mkl is not None and hasattr(mkl, "is_available"):
        return bool(mkl.is_available()), "torch.backends.mkl.is_available()"
    core = getattr(torch, "_C", None)
    if hasattr(core, "has_mkl"):
        return bool(core.has_mkl), "torch._C.has_mkl"
    text = torch_config_text(torch)
    if text is not None:
        return ("Math Kernel Library" in text or "USE_MKL=ON" in text), "torch.__config__.show()"
    # 0.3 reports nothing: after a GEMM, is an MKL library loaded into this process?
    torch.mm(torch.ones(8, 8), torch.ones(8, 8))
    loaded = loaded_libraries()
    if loaded is not None:
        return any("mkl" in os.path.basename(path).lower() for path in loaded), "an MKL library loaded after a GEMM"
    return None, "this torch has no API that reports MKL"


def loaded_libraries():
    """Paths of the shared libraries this process has loaded (Linux: /proc/self/maps; Windows:
    EnumProcessModules), or None where neither works."""
    try:
        with open("/proc/self/maps") as handle:
            return sorted({line.split()[-1] for line in handle if "/" in line})
    except (OSError, IndexError):
        pass
    if sys.platform != "win32":
        return None
    try:
        import ctypes
        from ctypes import wintypes

        psapi, kernel32 = ctypes.WinDLL("psapi"), ctypes.WinDLL("kernel32")
        kernel32.GetCurrentProcess.restype = wintypes.HANDLE
        process = kernel32.GetCurrentProcess()
        modules = (wintypes.HMODULE * 2048)()
        needed = wintypes.DWORD()
        if not psapi.EnumProcessModules(process, modules, ctypes.sizeof(modules), ctypes.byref(needed)):
            return None
        paths = []
        for module in modules[:needed.value // ctypes.sizeof(wintypes.HMODULE)]:
            name = ctypes.create_unicode_buffer(1024)
            if psapi.GetModuleFileNameExW(process, module, name, 1024):
                paths.append(name.value)
        return paths
    except Exception:
        return None


def cudnn_compiled(torch):
    cudnn = import_submodule("torch.backends.cudnn")
    if cudnn is not None and hasattr(cudnn, "is_available"):
        return bool(cudnn.is_available())
    core = getattr(torch, "_C", None)
    for name in ("_has_cudnn", "has_cudnn"):
        if hasattr(core, name):
            return bool(getattr(core, name))
    return None


class tf32_disabled:
    """Turn TF32 off (torch 1.7+ on Ampere and newer) so GPU float32 results match the CPU."""

    def __init__(self, torch):
        self.switches = []
        cuda_backend = import_submodule("torch.backends.cuda")
        cudnn = import_submodule("torch.backends.cudnn")
        matmul = getattr(cuda_backend, "matmul", None)
        for owner in (matmul, cudnn):
            if owner is not None and hasattr(owner, "allow_tf32"):
                self.switches.append(owner)

    def __enter__(self):
        self.saved = [owner.allow_tf32 for owner in self.switches]
        for owner in self.switches:
            owner.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        for owner, value in zip(self.switches, self.saved):
            owner.allow_tf32 = value
        return False


# ---------------------------------------------------------------------------------------------
# Checks: import, version, configuration
# ---------------------------------------------------------------------------------------------

@check("import", timeout=300, hang_hint="import torch hangs")
def check_import(ctx):
    torch = ctx.import_torch()
    where = getattr(torch, "__file__", None) or "(no __file__)"
    # torch.tensor() arrived in 0.4; 0.3 builds tensors with torch.FloatTensor & co.
    expected = ("__version__", "Tensor", "tensor", "nn", "autograd", "utils") if not legacy_api(torch) else (
        "__version__", "Tensor", "FloatTensor", "nn", "autograd", "utils")
    missing = [name for name in expected if not hasattr(torch, name)]
    if missing:
        raise CheckFailed("the torch imported from %s lacks %s: a stray module named torch shadows the "
                          "real one, or the install is broken" % (where, ", ".join(missing)))
    return "torch %s from %s" % (torch.__version__, os.path.dirname(where))


@check("version", timeout=60)
def check_version(ctx):
    torch = ctx.torch()
    have = str(torch.__version__)
    want = ctx.options.expect_version
    if not want:
        raise Skip("no expected version given (--expect-version or %s); torch reports %s"
                   % (ENV_EXPECT_VERSION, have))
    # pip wheels carry a local part (2.1.0+cpu); conda builds usually do not.
    base = have.split("+")[0]
    if have == want or base == want:
        return "torch %s, as expected" % have
    # A rebuild of the same release: setup.py appends .postN when the build number is above 1.
    post = base[len(want):] if base.startswith(want) else ""
    if post.startswith(".post") and post[5:].isdigit():
        return "torch %s, a rebuild of %s as expected" % (have, want)
    raise CheckFailed("torch reports version %s, expected %s" % (have, want))


@check("config.cuda_archs", timeout=60)
def check_cuda_archs(ctx):
    torch = ctx.torch()
    if compiled_cuda(torch) is None:
        if ctx.options.expect_variant == "cpu":
            return "CPU-only build, as expected: no GPU architectures"
        raise Skip("CPU-only build: no GPU architectures")
    found = compiled_archs(torch)
    want = ctx.options.expect_archs
    if found is None:
        raise Skip("torch %s does not report the GPU architectures compiled in (torch._C._cuda_getArchFlags "
                   "and get_arch_list() arrived in 1.6)%s" % (torch.__version__, "; expected " + want if want else ""))
    have = " ".join(found)
    if not want:
        return "compiled for %s (nothing expected: --expect-archs or %s)" % (have, ENV_EXPECT_ARCHS)
    missing = [name for name in arch_names(want) if name not in found]
    if missing:
        raise CheckFailed("expected %s (%s) but %s is not compiled in; compiled: %s"
                          % (want, " ".join(arch_names(want)), ", ".join(missing), have))
    return "compiled for %s, as expected (%s)" % (have, want)


@check("config.mkl", timeout=60)
def check_mkl(ctx):
    torch = ctx.torch()
    available, how = mkl_status(torch)
    if available is None:
        raise Skip(how)
    if not available:
        raise CheckFailed("MKL is not compiled in (%s is False); the torchwin builds link MKL" % how)
    detail = ""
    for line in (torch_config_text(torch) or "").splitlines():
        if "Math Kernel Library" in line:
            detail = ": " + line.strip(" -")
            break
    return "MKL available (%s)%s" % (how, detail)


def mkldnn_status(torch):
    """(True/False/None, how we know) for "is MKL-DNN compiled in" (an API from 1.1.0 on)."""
    mkldnn = import_submodule("torch.backends.mkldnn")
    if mkldnn is not None and hasattr(mkldnn, "is_available"):
        return bool(mkldnn.is_available()), "torch.backends.mkldnn.is_available()"
    core = getattr(torch, "_C", None)
    if hasattr(core, "has_mkldnn"):
        return bool(core.has_mkldnn), "torch._C.has_mkldnn"
    return None, "this torch has no API that reports MKL-DNN (torch.backends.mkldnn is from 1.1.0 on)"


@check("config.mkldnn", timeout=60)
def check_mkldnn(ctx):
    torch = ctx.torch()
    available, how = mkldnn_status(torch)
    if available is None:
        raise Skip(how)
    want = ctx.options.expect_mkldnn
    if want is not None and available != want:
        raise CheckFailed("MKL-DNN is %s (%s is %s), but the build %s it (--expect-mkldnn or %s)"
                          % ("compiled in" if available else "not compiled in", how, available,
                             "switched it on and must have" if want else "switched it off and must not have",
                             ENV_EXPECT_MKLDNN))
    return "MKL-DNN %s (%s)%s" % ("available" if available else "not compiled in", how,
                                  ", as expected" if want is not None else "")


@check("config.cuda", timeout=60)
def check_cuda_config(ctx):
    torch = ctx.torch()
    cuda_version = compiled_cuda(torch)
    compiled = cuda_version is not None
    have = "CUDA %s compiled in" % cuda_version if compiled else "CPU-only build (torch.version.cuda is None)"
    want = ctx.options.expect_variant or ("cuda" if ctx.options.require_cuda else None)
    if want is None:
        raise Skip("no expected variant given (--expect-variant or %s); %s" % (ENV_EXPECT_VARIANT, have))
    if want == "cpu":
        if compiled:
            raise CheckFailed("expected a CPU build, but CUDA %s is compiled in" % cuda_version)
        return have + ", as expected"
    if not compiled:
        raise CheckFailed("expected a %s build, but this torch is CPU-only (torch.version.cuda is None)" % want)
    wanted_version = want[4:]
    if wanted_version and not cuda_version_matches(cuda_version, wanted_version):
        raise CheckFailed("expected CUDA %s, but torch.version.cuda is %s" % (wanted_version, cuda_version))
    cudnn = cudnn_compiled(torch)
    if cudnn is False:
        raise CheckFailed("CUDA %s is compiled in but cuDNN is not (torch.backends.cudnn.is_available() "
                          "is False); the torchwin CUDA builds link cuDNN" % cuda_version)
    return "%s%s, as expected" % (have, "" if cudnn is None else " with cuDNN")


@check("config.distributed", timeout=60)
def check_distributed(ctx):
    """The Linux builds ship torch.distributed; the Windows builds of these releases never had it
    (setup.py forces it off there before 1.7), and the 2017 builds of 0.3 documented it as a limit."""
    torch = ctx.torch()
    dist = import_submodule("torch.distributed")
    available = dist is not None and hasattr(dist, "is_available") and bool(dist.is_available())
    if available:
        return "torch.distributed is available"
    if sys.platform == "win32" or legacy_api(torch):
        return "torch.distributed is not compiled in, as documented for %s (torch %s)" % (
            "the Windows builds" if sys.platform == "win32" else "the 0.3 builds", torch.__version__)
    raise CheckFailed("torch.distributed is not available (%s); the Linux builds ship it"
                      % ("no module" if dist is None else "is_available() is False"))


# The torch.cuda functions every release has at module level. The 2017 Windows builds fixed "an
# indentation bug in torch.cuda" (which function it hit is not recorded): a function indented into
# another is missing here.
CUDA_MODULE_FUNCTIONS = ("is_available", "device_count", "current_device", "set_device", "synchronize",
                         "get_device_name", "get_device_capability", "manual_seed", "manual_seed_all",
                         "empty_cache", "stream", "Stream", "Event", "cudart")


@check("regression.cuda_module", timeout=120)
def check_cuda_module(ctx):
    ctx.torch()
    cuda = import_submodule("torch.cuda")
    expect(cuda is not None, "torch.cuda does not import")
    missing = [name for name in CUDA_MODULE_FUNCTIONS if not callable(getattr(cuda, name, None))]
    expect(not missing, "torch.cuda lacks %s at module level" % ", ".join(missing))
    available = cuda.is_available()
    expect(isinstance(available, bool), "torch.cuda.is_available() returned %r" % (available,))
    count = cuda.device_count()
    expect(isinstance(count, int) and count >= 0, "torch.cuda.device_count() returned %r" % (count,))
    if not available or count == 0:
        return "%d torch.cuda functions defined; is_available() False, device_count() %d" % (
            len(CUDA_MODULE_FUNCTIONS), count)
    cuda.synchronize()
    cuda.cudart()  # loads the CUDA runtime (0.3 on Windows: found with `where cudart64*.dll`)
    nvtx = import_submodule("torch.cuda.nvtx")
    if nvtx is not None:
        nvtx.range_push("torchwin-smoke")
        nvtx.range_pop()
    return "%d torch.cuda functions defined; device %d (%s), synchronize, cudart()%s work" % (
        len(CUDA_MODULE_FUNCTIONS), cuda.current_device(), cuda.get_device_name(cuda.current_device()),
        " and nvtx ranges" if nvtx is not None else "")


# ---------------------------------------------------------------------------------------------
# Checks: CPU
# ---------------------------------------------------------------------------------------------

@check("cpu.tensor_math", timeout=120)
def check_tensor_math(ctx):
    torch = ctx.torch()
    t = new_tensor(torch, [[1.0, 2.0], [3.0, 4.0]])
    expect_close("sum of [[1,2],[3,4]]", scalar(t.sum()), 10.0, 0)
    expect_close("[[1,2],[3,4]] @ itself", torch.mm(t, t).tolist(), [[7.0, 10.0], [15.0, 22.0]], 0)
    expect_close("broadcast add", (t + new_tensor(torch, [10.0, 20.0])).tolist(),
                 [[11.0, 22.0], [13.0, 24.0]], 0)
    expect_close("inverse", torch.inverse(t).tolist(), [[-2.0, 1.0], [1.5, -0.5]], 1e-12)
    expect_close("exp(0), exp(1)", torch.exp(new_tensor(torch, [0.0, 1.0])).tolist(), [1.0, math.e], 1e-12)
    # A float32 GEMM big enough to go through the BLAS (MKL) path; the result is exact.
    product = torch.mm(torch.ones(64, 128), torch.ones(128, 32) * 0.5)
    expect(tuple(product.size()) == (64, 32), "64x128 @ 128x32 has shape %s" % (tuple(product.size()),))
    expect_close("ones(64,128) @ 0.5*ones(128,32) (min)", scalar(product.min()), 64.0, 0)
    expect_close("ones(64,128) @ 0.5*ones(128,32) (max)", scalar(product.max()), 64.0, 0)
    return "sum, matmul, broadcasting, inverse, exp and a 64x128x32 GEMM match known values"


@check("cpu.autograd", timeout=120)
def check_autograd(ctx):
    torch = ctx.torch()
    x = variable(torch, new_tensor(torch, [1.0, 2.0, 3.0]), requires_grad=True)
    y = (x * x * x).sum() + (2 * x).sum()
    y.backward()
    # d/dx (x^3 + 2x) = 3x^2 + 2
    expect(x.grad is not None, "x.grad is None after backward()")
    expect_close("gradient of sum(x^3 + 2x) at [1,2,3]", values(torch, x.grad), [5.0, 14.0, 29.0], 1e-12)
    # d/dx (x sin x) = sin x + x cos x, through torch.autograd.grad
    z = variable(torch, new_tensor(torch, [0.5]), requires_grad=True)
    (grad,) = torch.autograd.grad((z * torch.sin(z)).sum(), [z])
    expect_close("gradient of x*sin(x) at 0.5", values(torch, grad), [math.sin(0.5) + 0.5 * math.cos(0.5)], 1e-12)
    extra = ""
    if hasattr(torch, "no_grad"):
        with torch.no_grad():
            w = x * 2
        expect(not w.requires_grad, "an operation under torch.no_grad() still requires grad")
        extra = "; torch.no_grad() stops tracking"
    else:
        # 0.3: a volatile input makes everything computed from it untracked (inference mode).
        w = torch.autograd.Variable(new_tensor(torch, [1.0, 2.0, 3.0]), volatile=True) * x
        expect(w.volatile and not w.requires_grad, "an operation on a volatile Variable still requires grad")
        extra = "; a volatile Variable stops tracking"
    return "backward() and autograd.grad match hand-computed gradients" + extra


def make_net(torch):
    nn = torch.nn

    class Net(nn.Module):
        """conv 1->4 (3x3) -> relu -> linear 36->2, for 1x5x5 inputs."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 3 * 3, 2)

        def forward(self, x):
            x = nn.functional.relu(self.conv(x))
            return self.fc(x.view(x.size(0), -1))

    return Net()


@check("cpu.conv_linear", timeout=120)
def check_conv_linear(ctx):
    torch = ctx.torch()
    net = make_net(torch)
    # Known weights give a forward pass and gradients that can be computed by hand:
    # each conv output is the sum of 9 ones = 9, each linear output 36 * 9 / 36 = 9.
    net.conv.weight.data.fill_(1.0)
    net.conv.bias.data.fill_(0.0)
    net.fc.weight.data.fill_(1.0 / 36)
    net.fc.bias.data.fill_(0.0)
    out = net(variable(torch, torch.ones(2, 1, 5, 5)))
    expect(tuple(out.size()) == (2, 2), "output shape %s, expected (2, 2)" % (tuple(out.size()),))
    expect_close("forward output", values(torch, out), [[9.0, 9.0], [9.0, 9.0]], 1e-4)
    out.sum().backward()
    # d(sum)/d fc.weight = activation summed over the batch = 2 * 9; d/d fc.bias = 2;
    # d/d conv.weight = 9 positions * (2 outputs / 36) * 2 samples = 1; same for conv.bias.
    expect_close("fc.weight gradient", values(torch, net.fc.weight.grad), [[18.0] * 36] * 2, 1e-3)
    expect_close("fc.bias gradient", values(torch, net.fc.bias.grad), [2.0, 2.0], 1e-4)
    expect_close("conv.weight gradient", values(torch, net.conv.weight.grad), [[[[1.0] * 3] * 3]] * 4, 1e-4)
    expect_close("conv.bias gradient", values(torch, net.conv.bias.grad), [1.0] * 4, 1e-4)
    # A few SGD steps from a random start must reduce a regression loss.
    torch.manual_seed(0)
    net = make_net(torch)
    inputs, targets = variable(torch, torch.randn(8, 1, 5, 5)), variable(torch, torch.randn(8, 2))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = ((net(inputs) - targets) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(scalar(loss))
    expect(all(math.isfinite(v) for v in losses), "non-finite training loss: %r" % (losses,))
    expect(losses[-1] < losses[0], "5 SGD steps did not reduce the loss: %r" % (losses,))
    return "conv+linear forward/backward match hand-computed values; SGD loss %.4f -> %.4f" % (
        losses[0], losses[-1])


@check("cpu.save_load", timeout=120)
def check_save_load(ctx):
    torch = ctx.torch()
    torch.manual_seed(1)
    net = make_net(torch)
    payload = {
        "floats": new_tensor(torch, [0.5, -1.25, 3.0]),
        "ints": new_tensor(torch, [[1, 2], [3, 4]], "long"),
        "plain": [1, 2.5, "text"],
        "state": net.state_dict(),
    }

    def same(loaded):
        expect(torch.equal(loaded["floats"], payload["floats"]), "float64 tensor changed in the round trip")
        expect(torch.equal(loaded["ints"], payload["ints"]), "int64 tensor changed in the round trip")
        expect(loaded["plain"] == payload["plain"], "plain list came back as %r" % (loaded["plain"],))
        copy = make_net(torch)
        copy.load_state_dict(loaded["state"])
        probe = variable(torch, torch.randn(3, 1, 5, 5))
        expect(torch.equal(data_of(torch, copy(probe)), data_of(torch, net(probe))),
               "a network loaded from a state_dict computes differently")

    # 0.3's serializer writes storages through a file descriptor, so only real files work there
    # (torch.save to a BytesIO raises "couldn't retrieve a file descriptor"); 0.4 on take any file object.
    in_memory = not legacy_api(torch)
    if in_memory:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        buffer.seek(0)
        same(torch.load(buffer))
    folder = tempfile.mkdtemp(prefix="torchwin-smoke-")
    try:
        path = os.path.join(folder, "payload.pt")
        torch.save(payload, path)
        same(torch.load(path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if in_memory:
        return "tensors, a list and a state_dict survive torch.save/torch.load (memory and file)"
    return "tensors, a list and a state_dict survive torch.save/torch.load (a file: 0.3 saves to real files only)"


# ---------------------------------------------------------------------------------------------
# Checks: CUDA (SKIP without a GPU unless --require-cuda)
# ---------------------------------------------------------------------------------------------

@check("cuda.device", timeout=600, hang_hint="CUDA initialisation hangs")
def check_cuda_device(ctx):
    torch = ctx.gpu()  # the first CUDA call may JIT-compile PTX for a new GPU: generous timeout
    count = torch.cuda.device_count()
    names = []
    for index in range(count):
        name = torch.cuda.get_device_name(index)
        if hasattr(torch.cuda, "get_device_capability"):
            major, minor = torch.cuda.get_device_capability(index)
        else:
            props = torch.cuda.get_device_properties(index)
            major, minor = props.major, props.minor
        names.append("%d: %s (compute capability %d.%d)" % (index, name, major, minor))
    torch.ones(1).cuda()  # initialise the context now, not inside a later check
    return "%d GPU(s): %s" % (count, "; ".join(names))


@check("cuda.roundtrip", timeout=180)
def check_cuda_roundtrip(ctx):
    torch = ctx.gpu()
    for kind in ("float", "double", "long", "byte"):  # .to(dtype) arrived in 0.4
        cpu = getattr(torch.arange(0, 1000) % 251, kind)()
        back = cpu.cuda().cpu()
        expect(torch.equal(back, cpu), "a %s tensor changed on its way to the GPU and back" % kind)
    x = torch.arange(0, 1000).float()
    expect(torch.equal((x.cuda() * 2 + 1).cpu(), x * 2 + 1), "x*2+1 on the GPU differs from the CPU")
    return "float32, float64, int64 and uint8 tensors survive CPU -> GPU -> CPU; x*2+1 agrees"


@check("cuda.matmul", timeout=180)
def check_cuda_matmul(ctx):
    torch = ctx.gpu()
    torch.manual_seed(2)
    a, b = torch.randn(256, 128), torch.randn(128, 64)
    reference = torch.mm(a.double(), b.double())
    with tf32_disabled(torch):
        got32 = torch.mm(a.cuda(), b.cuda()).cpu()
    got64 = torch.mm(a.double().cuda(), b.double().cuda()).cpu()
    d32, d64 = max_abs_diff(torch, got32, reference), max_abs_diff(torch, got64, reference)
    expect(d32 < 1e-3, "float32 matmul on the GPU differs from the CPU by %g" % d32)
    expect(d64 < 1e-10, "float64 matmul on the GPU differs from the CPU by %g" % d64)
    return "256x128 @ 128x64 on the GPU matches the CPU (float32 diff %.2g, float64 %.2g)" % (d32, d64)


@check("cuda.cudnn_conv", timeout=180)
def check_cudnn_conv(ctx):
    torch = ctx.gpu()
    cudnn = import_submodule("torch.backends.cudnn")
    expect(cudnn is not None and cudnn_compiled(torch), "cuDNN is not available to this torch")
    expect(cudnn.enabled, "torch.backends.cudnn.enabled is False")
    conv2d = torch.nn.functional.conv2d
    torch.manual_seed(3)
    x, w, grad_out = torch.randn(2, 3, 16, 16), torch.randn(8, 3, 3, 3), torch.randn(2, 8, 16, 16)
    results = {}
    for device in ("cpu", "cuda"):
        xd = variable(torch, x.double() if device == "cpu" else x.cuda(), requires_grad=True)
        wd = variable(torch, w.double() if device == "cpu" else w.cuda(), requires_grad=True)
        god = variable(torch, grad_out.double() if device == "cpu" else grad_out.cuda())
        with tf32_disabled(torch):
            out = conv2d(xd, wd, padding=1)
            out.backward(god)
        results[device] = [data_of(torch, t).cpu() for t in (out, xd.grad, wd.grad)]
    for what, got, want in zip(("output", "input gradient", "weight gradient"), results["cuda"], results["cpu"]):
        diff = max_abs_diff(torch, got, want)
        scale = max(1.0, scalar(want.abs().max()))
        # cuDNN may pick Winograd or FFT algorithms, which round differently from a direct sum.
        expect(diff < 1e-3 * scale, "cuDNN convolution %s differs from the CPU by %g" % (what, diff))
    return "cuDNN conv2d forward and backward match the CPU within tolerance"


@check("cuda.cudnn_version", timeout=180)
def check_cudnn_version(ctx):
    torch = ctx.gpu()
    cudnn = import_submodule("torch.backends.cudnn")
    expect(cudnn is not None and cudnn_compiled(torch), "cuDNN is not available to this torch")
    version = cudnn.version()
    expect(isinstance(version, int) and version > 0, "torch.backends.cudnn.version() returned %r" % (version,))
    # cuDNN 9 encodes major*10000 + minor*100 + patch; older releases major*1000 + minor*100 + patch.
    major = version // 10000 if version >= 10000 else version // 1000
    rest = version % 10000 if version >= 10000 else version % 1000
    return "cuDNN %d.%d.%d (torch.backends.cudnn.version() = %d)" % (major, rest // 100, rest % 100, version)


@check("cuda.streams", timeout=180)
def check_cuda_streams(ctx):
    torch = ctx.gpu()
    stream = torch.cuda.Stream()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a = torch.ones(512, 512).cuda()
    stream.wait_stream(torch.cuda.current_stream())  # `a` was made on the default stream
    with torch.cuda.stream(stream):
        start.record()
        b = torch.mm(a, a)
        end.record()
    end.synchronize()
    expect(end.query(), "an event reports unfinished work after synchronize()")
    elapsed = start.elapsed_time(end)
    expect(elapsed >= 0, "event elapsed_time is %r" % (elapsed,))
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    expect(scalar(b.min()) == 512.0 and scalar(b.max()) == 512.0, "work done on a side stream is wrong")
    return "work on a side stream is ordered by events and wait_stream (%.3f ms)" % elapsed


@check("cuda.memory", timeout=180)
def check_cuda_memory(ctx):
    torch = ctx.gpu()
    if not hasattr(torch.cuda, "memory_allocated"):
        raise Skip("this torch has no torch.cuda.memory_allocated()")
    torch.cuda.synchronize()
    gc.collect()
    baseline = torch.cuda.memory_allocated()
    size = 64 * 1024 * 1024
    tensors = [torch.empty(size // 4).cuda(), torch.ones(1024, 1024).cuda()]
    tensors.append(tensors[1] * 3)
    torch.cuda.synchronize()
    peak = torch.cuda.memory_allocated()
    expect(peak >= baseline + size, "allocated memory rose by only %d bytes for a 64 MiB tensor"
           % (peak - baseline))
    del tensors
    gc.collect()
    torch.cuda.synchronize()
    after = torch.cuda.memory_allocated()
    if hasattr(torch.cuda, "empty_cache"):
        torch.cuda.empty_cache()
    expect(after == baseline, "allocated memory is %d bytes after freeing, %d before allocating"
           % (after, baseline))
    return "allocated memory rose by %.1f MiB and returned to its baseline" % ((peak - baseline) / 2.0 ** 20)


def gpu_solve(torch, a, b):
    """Solve a x = b on whatever API this torch has: linalg.solve (1.8+), solve (1.1+), gesv (0.4)."""
    linalg = getattr(torch, "linalg", None)
    if linalg is not None and hasattr(linalg, "solve"):
        return linalg.solve(a, b)
    if hasattr(torch, "solve"):
        return torch.solve(b, a)[0]
    return torch.gesv(b, a)[0]


@check("cuda.magma", timeout=180)
def check_cuda_magma(ctx):
    torch = ctx.gpu()
    torch.ones(1).cuda()  # has_magma is only set once CUDA is initialised
    has_magma = getattr(torch.cuda, "has_magma", None)
    if has_magma is None:
        text = torch_config_text(torch)
        has_magma = None if text is None else ("magma" in text.lower())
    if not has_magma:
        why = "MAGMA is not compiled in (torch.cuda.has_magma is %r)" % (has_magma,)
        if ctx.options.expect_magma:
            raise CheckFailed(why + ", but --expect-magma or %s=1 was given" % ENV_EXPECT_MAGMA)
        if is_legacy(torch):
            return why + ", as the 0.3 builds document (no MAGMA)"
        raise Skip(why)
    torch.manual_seed(4)
    a = torch.randn(64, 64).double() + 64 * torch.eye(64).double()
    b = torch.randn(64, 4).double()
    backend = import_submodule("torch.backends.cuda")
    prefer = getattr(backend, "preferred_linalg_library", None)
    saved = None
    if prefer is not None:
        # Newer torch may pick cuSOLVER; ask for MAGMA so this really exercises it.
        saved = prefer()
        prefer("magma")
    try:
        x = gpu_solve(torch, a.cuda(), b.cuda()).cpu()
    finally:
        if prefer is not None:
            prefer(saved)
    residual = max_abs_diff(torch, torch.mm(a, data_of(torch, x)), b)
    expect(residual < 1e-8, "the GPU solve of a well-conditioned 64x64 system has residual %g" % residual)
    return "a 64x64 float64 solve on the GPU (MAGMA compiled in) has residual %.2g" % residual


@check("cuda.nccl", timeout=120)
def check_cuda_nccl(ctx):
    """NCCL (multi-GPU collectives): the Linux CUDA builds have it; Windows builds never had it."""
    torch = ctx.gpu()
    compiled = hasattr(getattr(torch, "_C", None), "_nccl_all_reduce")
    if not compiled:
        if sys.platform == "win32" or legacy_api(torch):
            return "NCCL is not compiled in, as documented for %s" % (
                "the Windows builds" if sys.platform == "win32" else "the 0.3 builds")
        raise CheckFailed("NCCL is not compiled in (torch._C has no _nccl_all_reduce); the Linux CUDA builds link it")
    nccl = import_submodule("torch.cuda.nccl")
    expect(nccl is not None, "torch.cuda.nccl does not import")
    x = torch.ones(4).cuda()
    expect(nccl.is_available([x]), "torch.cuda.nccl.is_available() is False for a CUDA tensor")
    count = torch.cuda.device_count()
    if count < 2:
        return "NCCL compiled in and usable for CUDA tensors (one GPU: no collective run)"
    tensors = [torch.ones(4).cuda(i) * (i + 1) for i in range(count)]
    nccl.all_reduce(tensors)
    want = float(sum(range(1, count + 1)))
    expect(all(scalar(t.min()) == want == scalar(t.max()) for t in tensors), "NCCL all_reduce gave a wrong sum")
    return "NCCL all_reduce over %d GPUs sums correctly" % count


@check("cuda.multi_gpu", timeout=180)
def check_multi_gpu(ctx):
    torch = ctx.gpu()
    count = torch.cuda.device_count()
    if count < 2:
        raise Skip("only %d GPU visible; a copy between devices needs two" % count)
    x = torch.arange(0, 4096).float()
    on0 = x.cuda(0)
    on1 = on0.cuda(1)
    expect(on1.get_device() == 1, "a tensor copied to GPU 1 reports device %d" % on1.get_device())
    back = (on1 + 1).cuda(0)
    expect(torch.equal(back.cpu(), x + 1), "a copy GPU 0 -> GPU 1 -> GPU 0 changed the data")
    return "copies between GPU 0 and GPU 1 preserve the data (%d GPUs)" % count


# ---------------------------------------------------------------------------------------------
# Checks with a child process of their own: DataLoader with spawn workers, regressions
# ---------------------------------------------------------------------------------------------

def data_loader_class():
    from torch.utils.data import DataLoader

    return DataLoader


def batches(torch, dataset, workers, batch_size):
    DataLoader = data_loader_class()
    kwargs = {"batch_size": batch_size, "num_workers": workers}
    try:
        accepts_timeout = "timeout" in inspect.signature(DataLoader.__init__).parameters
    except (TypeError, ValueError):
        accepts_timeout = False
    if workers and accepts_timeout:
        kwargs["timeout"] = WORKER_BATCH_TIMEOUT_S
    return [tuple(batch) for batch in DataLoader(dataset, **kwargs)]


@check("dataloader.workers", timeout=180, isolated=True,
       hang_hint="DataLoader with num_workers=2 (spawn) did not finish")
def check_dataloader_workers(ctx):
    torch = ctx.torch()
    use_spawn()
    dataset = SmokeDataset(24, 16)
    serial = batches(torch, dataset, 0, 4)
    started = time.time()
    parallel = batches(torch, dataset, 2, 4)
    seconds = time.time() - started
    expect(len(parallel) == len(serial), "%d batches with 2 workers, %d without" % (len(parallel), len(serial)))
    pids = set()
    for index, (one, other) in enumerate(zip(serial, parallel)):
        expect(torch.equal(one[0], other[0]) and torch.equal(one[1], other[1]),
               "batch %d differs between num_workers=0 and num_workers=2" % index)
        pids.update(other[2].tolist())
    expect(os.getpid() not in pids, "num_workers=2 produced items in the main process")
    return "%d batches from %d spawned worker process(es) equal the num_workers=0 batches (%.1fs)" % (
        len(parallel), len(pids), seconds)


@check("dataloader.worker_error", timeout=180, isolated=True,
       hang_hint="an exception in a DataLoader worker did not reach the caller")
def check_dataloader_worker_error(ctx):
    torch = ctx.torch()
    data_loader_class()  # a broken torch fails here, not inside the try below
    use_spawn()
    try:
        batches(torch, FailingDataset(16, 4), 2, 2)
    except Exception as exc:
        if WORKER_ERROR_MARKER not in str(exc):
            raise CheckFailed("iterating raised %s, without the worker's message" % describe_exception(exc))
        return "a ValueError raised in a spawned worker reached the caller as %s" % type(exc).__name__
    raise CheckFailed("a worker raised ValueError but iterating the DataLoader finished without an error")


@check("regression.backward_error", timeout=90, isolated=True,
       hang_hint="backward() hangs after an earlier backward() raised (the deadlock this check guards against)")
def check_backward_error(ctx):
    torch = ctx.torch()

    class Explode(torch.autograd.Function):
        @staticmethod
        def forward(fctx, x):
            return x.clone()

        @staticmethod
        def backward(fctx, grad):
            raise RuntimeError(BACKWARD_ERROR_MARKER)

    x = variable(torch, new_tensor(torch, [1.0, 2.0, 3.0]), requires_grad=True)
    for round_ in range(2):
        try:
            Explode.apply(x).sum().backward()
        except Exception as exc:  # RuntimeError today; old versions may wrap it differently
            expect(BACKWARD_ERROR_MARKER in str(exc), "backward raised %s" % describe_exception(exc))
        else:
            raise CheckFailed("an error raised in backward() did not reach the caller")
        for _ in range(2):
            x.grad = None
            (x * x).sum().backward()
            expect_close("gradient of sum(x^2) after a failed backward", values(torch, x.grad), [2.0, 4.0, 6.0],
                         1e-12)
    return "backward() keeps working after a backward() that raised (2 rounds)"


@check("regression.dataloader_memory", timeout=300, isolated=True,
       hang_hint="DataLoader epochs with 2 spawn workers did not finish")
def check_dataloader_memory(ctx):
    torch = ctx.torch()
    use_spawn()
    first, how = read_rss()
    if first is None:
        raise Skip(how)
    dataset = SmokeDataset(MEMORY_ITEMS, MEMORY_ITEM_FLOATS)
    expected = float(MEMORY_ITEM_FLOATS * sum(range(MEMORY_ITEMS)))
    sizes = []
    for _ in range(1 + MEMORY_MEASURED_EPOCHS):  # one warm-up epoch, then the measured ones
        total = 0.0
        for batch in batches(torch, dataset, 2, MEMORY_BATCH):
            # Summing reads every page: batches arrive in shared memory, which only counts
            # towards RSS once touched, as real training does.
            total += scalar(batch[0].double().sum())
        expect(total == expected, "an epoch delivered values summing to %r, expected %r" % (total, expected))
        del batch
        gc.collect()
        sizes.append(read_rss()[0])
    mib = 2.0 ** 20
    growth = (sizes[-1] - sizes[0]) / mib
    moved = MEMORY_MEASURED_EPOCHS * MEMORY_ITEMS * MEMORY_ITEM_FLOATS * 4 / mib
    summary = "%s after the warm-up epoch %.0f MiB, after %d more epochs %.0f MiB (%+.1f MiB; bound %d MiB, " \
              "%.0f MiB of batches moved)" % (how, sizes[0] / mib, MEMORY_MEASURED_EPOCHS, sizes[-1] / mib,
                                             growth, MEMORY_BOUND_MIB, moved)
    expect(growth <= MEMORY_BOUND_MIB, "memory grows with DataLoader epochs: " + summary)
    return summary


# ---------------------------------------------------------------------------------------------
# Child side: run checks, append results to the result file
# ---------------------------------------------------------------------------------------------

def run_check(ctx, chk):
    started = time.time()
    try:
        reason, status = chk.func(ctx) or "", PASS
    except Skip as exc:
        reason, status = str(exc), SKIP
    except CheckFailed as exc:
        reason, status = str(exc), FAIL
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # anything a broken torch throws, SystemExit included
        reason, status = describe_exception(exc), FAIL
    return collections.OrderedDict(
        [("name", chk.name), ("status", status), ("reason", reason),
         ("seconds", round(time.time() - started, 3))])


def child_main(args):
    by_name = {chk.name: chk for chk in CHECKS}
    names = [name for name in args.child.split(",") if name]
    unknown = [name for name in names if name not in by_name]
    if unknown or not args.result_file:
        sys.stderr.write("run_test.py: unknown checks %s or no --result-file\n" % unknown)
        return 2
    try:
        import faulthandler

        faulthandler.enable()  # a crash prints the Python stack into the child's stderr
    except Exception:
        faulthandler = None
    ctx = Context(args)
    with open(args.result_file, "a") as out:

        def emit(record):
            out.write(json.dumps(record) + "\n")
            out.flush()

        for name in names:
            chk = by_name[name]
            # The parent times the check from here, not from our interpreter's start.
            emit({"event": "start", "name": name})
            if faulthandler is not None:
                # Shortly before the parent gives up, show where this check hangs.
                faulthandler.dump_traceback_later(max(0.5, 0.9 * chk.timeout * args.timeout_scale))
            record = run_check(ctx, chk)
            if faulthandler is not None:
                faulthandler.cancel_dump_traceback_later()
            if ctx.imported is not None and not ctx.info_sent:
                ctx.info_sent = True
                emit({"event": "info", "torch": torch_info(ctx.imported)})
            record["event"] = "result"
            emit(record)
    return 0


# ---------------------------------------------------------------------------------------------
# Parent side: plan the children, enforce timeouts, report
# ---------------------------------------------------------------------------------------------

def stderr_summary(path, limit=600):
    """What a dead or hung child left on stderr: faulthandler's innermost frames when it wrote a
    stack dump (on a crash, or just before the time bound), else the last lines."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return ""
    headers = [i for i, line in enumerate(lines) if "most recent call first" in line]
    if headers:
        current = [i for i in headers if lines[i].startswith("Current thread")]
        start = (current or headers)[-1]  # the main thread is dumped last
        frames = [line for line in lines[start + 1:] if line.startswith('File "')][:3]
        fatal = [line for line in lines if line.startswith("Fatal Python error")][:1]
        text = " <- ".join(fatal + frames)
    else:
        text = " | ".join(lines[-6:])
    return text[-limit:]


def kill_tree(proc):
    """Kill a child and the DataLoader workers it started."""
    if os.name == "nt":
        # taskkill /T also ends the spawned workers, which proc.kill() would leave behind.
        with open(os.devnull, "w") as devnull:
            subprocess.call(["taskkill", "/F", "/T", "/PID", str(proc.pid)], stdout=devnull, stderr=devnull)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.kill()
    except OSError:
        pass
    proc.wait()


class Runner:
    """Runs checks in child processes and collects their results in order."""

    def __init__(self, args, report):
        self.args = args
        self.report = report  # called with each result record as it arrives
        self.results = []
        self.torch = None
        self.import_failed = False
        self.workdir = tempfile.mkdtemp(prefix="torchwin-smoke-")
        self.children = 0

    def close(self):
        shutil.rmtree(self.workdir, ignore_errors=True)

    def record(self, record):
        record.pop("event", None)
        self.results.append(record)
        # The child reports torch's details as soon as it imported; a failed import check without
        # them means torch did not import at all, so the checks still to come are skipped.
        if record["name"] == "import" and record["status"] == FAIL and self.torch is None:
            self.import_failed = True
        self.report(record)

    def skip_rest(self, checks, reason):
        for chk in checks:
            self.record(collections.OrderedDict(
                [("name", chk.name), ("status", SKIP), ("reason", reason), ("seconds", 0.0)]))

    def run(self, checks):
        batch = []
        for chk in checks:
            if chk.isolated:
                if batch:
                    self.run_batch(batch)
                    batch = []
                self.run_batch([chk])
            else:
                batch.append(chk)
        if batch:
            self.run_batch(batch)
        return self.results

    def run_batch(self, checks):
        remaining = list(checks)
        while remaining:
            if self.import_failed:
                self.skip_rest(remaining, "needs torch, which did not import (see the import check)")
                return
            remaining = self.run_child(remaining)

    def run_child(self, checks):
        """Run `checks` in one child; return those still to run after a crash or a hang."""
        self.children += 1
        index = self.children
        result_path = os.path.join(self.workdir, "result-%d.jsonl" % index)
        err_path = os.path.join(self.workdir, "stderr-%d.txt" % index)
        open(result_path, "w").close()
        command = [sys.executable, os.path.abspath(__file__), "--child", ",".join(c.name for c in checks),
                   "--result-file", result_path] + option_argv(self.args)
        kwargs = {}
        if os.name != "nt":
            kwargs["start_new_session"] = True  # a process group, so kill_tree reaches the workers
        pending = list(checks)
        offset = 0
        timed_out = False
        with open(os.devnull, "w") as devnull, open(err_path, "w") as err:
            # Output goes to files, not pipes: workers left behind by a killed child would keep a
            # pipe open and block us.
            proc = subprocess.Popen(command, stdout=devnull, stderr=err, **kwargs)
            try:
                clock = time.time()
                started = False  # has the child reported pending[0]'s start yet?
                while pending:
                    exited = proc.poll() is not None
                    offset, events = self.read_events(result_path, offset)
                    for event in events:
                        if event.get("event") == "info":
                            self.torch = self.torch or event.get("torch")
                        elif event.get("event") == "start":
                            if pending and event.get("name") == pending[0].name:
                                clock, started = time.time(), True
                        elif pending and event.get("name") == pending[0].name:
                            pending.pop(0)
                            self.record(event)
                            clock, started = time.time(), False
                    if exited or not pending:
                        break
                    # A check's bound counts from its start in the child; the child's own start-up
                    # (interpreter, this script) has a fixed allowance of its own.
                    limit = pending[0].timeout * self.args.timeout_scale + (0 if started else STARTUP_ALLOWANCE_S)
                    if time.time() - clock > limit:
                        timed_out = True
                        break
                    time.sleep(0.05)
                if not pending:
                    try:
                        proc.wait(timeout=30)  # let it exit on its own: all results are in
                    except subprocess.TimeoutExpired:
                        pass
            finally:
                if proc.poll() is None:
                    kill_tree(proc)  # hung, interrupted, or done but lingering
        if not pending:
            return []
        current = pending.pop(0)
        seconds = round(time.time() - clock, 3)
        tail = stderr_summary(err_path)
        if timed_out and not started:
            reason = "the test process did not start this check within %g s" % (
                current.timeout * self.args.timeout_scale + STARTUP_ALLOWANCE_S)
        elif timed_out:
            reason = "timed out after %g s: %s" % (current.timeout * self.args.timeout_scale,
                                                   current.hang_hint or "the check hangs")
        else:
            reason = "the test process died during this check (exit code %s)" % proc.returncode
        if tail:
            reason += "; stderr: " + tail
        self.record(collections.OrderedDict(
            [("name", current.name), ("status", FAIL), ("reason", reason), ("seconds", seconds)]))
        if current.name == "import":
            self.import_failed = True
        return pending

    @staticmethod
    def read_events(path, offset):
        """New complete JSON lines in the result file since `offset`."""
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]
        events = []
        for line in complete.decode("utf-8", "replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return offset + len(complete), events


def summary_line(results):
    counts = {status: sum(1 for r in results if r["status"] == status) for status in (PASS, FAIL, SKIP)}
    return "%d passed, %d failed, %d skipped" % (counts[PASS], counts[FAIL], counts[SKIP]), counts


def write_line(stream, text):
    """Write a line even when the console cannot encode it (localized Windows error messages)."""
    try:
        stream.write(text + "\n")
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "replace").decode(encoding) + "\n")
    stream.flush()


def format_result(record):
    return "%s  %-28s %7.2fs  %s" % (record["status"], record["name"], record["seconds"], record["reason"])


def parent_main(args):
    progress = sys.stderr if args.json else sys.stdout

    def report(record):
        write_line(progress, format_result(record))

    started = time.time()
    write_line(progress, "torchwin smoke test: Python %s (%s) on %s" % (
        platform.python_version(), sys.executable, platform.platform()))
    runner = Runner(args, report)
    try:
        results = runner.run(args.selected)
    finally:
        runner.close()
    line, counts = summary_line(results)
    write_line(progress, line)
    if args.json:
        document = collections.OrderedDict([
            ("ok", counts[FAIL] == 0),
            ("summary", collections.OrderedDict([
                ("passed", counts[PASS]), ("failed", counts[FAIL]), ("skipped", counts[SKIP]), ("line", line)])),
            ("checks", results),
            ("torch", runner.torch),
            ("python", collections.OrderedDict([
                ("version", platform.python_version()), ("executable", sys.executable)])),
            ("platform", platform.platform()),
            ("options", collections.OrderedDict([
                ("require_cuda", bool(args.require_cuda)), ("expect_version", args.expect_version),
                ("expect_variant", args.expect_variant), ("expect_magma", bool(args.expect_magma)),
                ("expect_archs", args.expect_archs),
                ("timeout_scale", args.timeout_scale), ("only", args.only)])),
            ("seconds", round(time.time() - started, 3)),
        ])
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        sys.stdout.flush()
    return 1 if counts[FAIL] else 0


def main(argv=None):
    parser = make_parser()
    args = resolve_options(parser, parser.parse_args(argv))
    if args.child is not None:
        return child_main(args)
    args.selected = select_checks(parser, args.only)
    return parent_main(args)


if __name__ == "__main__":
    # The guard matters: spawned DataLoader workers re-import this file and must not run main().
    sys.exit(main())
