"""Upstream's own Linux wheels of torch and torchvision, for running both package tests on them.

PyPI has upstream's manylinux1 wheels of torch 1.0.0-1.7.1 and of the torchvision paired with each
(recipes/torchvision/variants.yaml says which); pyenv has CPython 3.6-3.9 on every machine of this
kind. tests/recipes/test_upstream_wheels.py (marker `upstream_wheels`, on with TORCHWIN_WHEEL_CACHE)
installs each pair into a virtual environment of its own and runs recipes/pytorch/run_test.py and
recipes/torchvision/run_test.py on it, on the CPU. Each run leaves a JSON record under
$TORCHWIN_WHEEL_CACHE/results; `python tests/recipes/upstream_wheels.py` writes the tables of
recipes/pytorch/README.md and recipes/torchvision/README.md from those records.
"""

import collections
import json
import os
import shutil
import struct
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE_ENV = "TORCHWIN_WHEEL_CACHE"
KEEP_VENVS_ENV = "TORCHWIN_WHEEL_KEEP_VENVS"

# What each release's Linux wheel on PyPI is: torch.version.cuda as the wheel's torch/version.py
# spells it (read from the cp37 wheels, Dec 2026), and the CPython versions PyPI has it for (pip
# download answered "no matching distribution" for the others; 1.5.0 on declare Requires-Python
# >=3.6.2, so asking for 3.6 needs the micro version).
WHEEL_CUDA = {
    "1.0.0": "9.0.176", "1.0.1": "9.0.176", "1.1.0": "9.0.176",
    "1.2.0": "10.0.130", "1.3.0": "10.1.243", "1.3.1": "10.1.243", "1.4.0": "10.1",
    "1.5.0": "10.2", "1.5.1": "10.2", "1.6.0": "10.2", "1.7.0": "10.2", "1.7.1": "10.2",
}
WHEEL_PYTHONS = {release: ("3.6", "3.7") for release in WHEEL_CUDA}
WHEEL_PYTHONS.update({release: ("3.6", "3.7", "3.8") for release in ("1.4.0", "1.5.0", "1.5.1", "1.6.0", "1.7.0")})
WHEEL_PYTHONS["1.7.1"] = ("3.6", "3.7", "3.8", "3.9")
# The GPU code compiled in, where torch tells without a GPU (torch._C._cuda_getArchFlags, 1.6 on),
# as TORCH_CUDA_ARCH_LIST spells it; run_test.py --expect-archs checks it. Read from the wheels.
WHEEL_ARCHS = {"1.6.0": "3.7;5.0;6.0;7.0;7.5", "1.7.0": "3.7;5.0;6.0;7.0;7.5", "1.7.1": "3.7;5.0;6.0;7.0;7.5"}
# The GPU code in the wheels' shared libraries (ELF .nv_fatbin sections: sm_NN machine code, compute_NN
# PTX), every architecture any kernel has, read from the cp37 wheels by wheel_gpu_code() (Dec 2026).
# torch/lib/ holds more than torch's own kernels (MAGMA, NCCL, cuDNN's helpers), hence sm_37/sm_61 in
# wheels whose TORCH_CUDA_ARCH_LIST lacked them. None has sm_30 machine code before 1.2.0.
WHEEL_GPU_CODE = {
    "1.0.0": "sm_35 sm_37 sm_50 sm_52 sm_53 sm_60 sm_61 sm_70 compute_50",
    "1.0.1": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 compute_50",
    "1.1.0": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 compute_50",
    "1.2.0": "sm_30 sm_35 sm_50 sm_60 sm_61 sm_70 sm_75 compute_50 compute_75",
    "1.3.0": "sm_30 sm_35 sm_50 sm_60 sm_61 sm_70 sm_75 compute_50",
    "1.3.1": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 sm_75 compute_37",
    "1.4.0": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 sm_75 compute_37",
    "1.5.0": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 sm_75 compute_37",
    "1.5.1": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 sm_75 compute_37",
    "1.6.0": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 sm_75",
    "1.7.0": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 sm_75",
    "1.7.1": "sm_35 sm_37 sm_50 sm_60 sm_61 sm_70 sm_75",
}
# The same for torchvision's wheels (torchvision/*.so); 0.2.2 is pure Python.
VISION_GPU_CODE = {
    "0.2.2": "", "0.3.0": "sm_30 compute_30",
    "0.4.0": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50", "0.4.1": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50",
    "0.4.2": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50", "0.5.0": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50",
    "0.6.0": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50", "0.6.1": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50",
    "0.7.0": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50", "0.8.1": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50",
    "0.8.2": "sm_35 sm_50 sm_60 sm_70 sm_75 compute_50",
}
# PyPI has 0.2.2 only as post releases; the last one is what pip picks for 0.2.2.*.
PYPI_TORCHVISION = {"0.2.2": "0.2.2.post3"}
# The CPython of each minor version on this kind of machine (`pyenv versions`).
PYENV_PYTHONS = {"3.6": "3.6.15", "3.7": "3.7.16", "3.8": "3.8.18", "3.9": "3.9.18"}
# torchvision's run requirements that pip installs; the C libraries (libpng, jpeg) are inside the wheels.
PIP_PACKAGES = ("pillow", "six", "tqdm")
# numpy for a Python the recipes have no row for: 1.19.3 is the first numpy with Python 3.9 wheels.
NUMPY_WITHOUT_ROW = {"3.9": "numpy>=1.19.3,<1.20"}


def torchvision_pairs():
    """{torch release: torchvision release}, from recipes/torchvision/variants.yaml."""
    import yaml

    data = yaml.safe_load((ROOT / "recipes" / "torchvision" / "variants.yaml").read_text())
    pairs = {}
    for version, releases in zip(data["torchvision_version"], data["torchvision_pytorch_releases"]):
        for release in releases.split():
            pairs[release] = version
    return pairs


def matrix():
    """[(torch release, Python)] of every upstream Linux wheel, oldest first."""
    def key(release):
        return tuple(int(p) for p in release.split("."))

    return [(release, python) for release in sorted(WHEEL_CUDA, key=key) for python in WHEEL_PYTHONS[release]]


def conda_to_pip(spec):
    """`numpy 1.15.*` -> `numpy==1.15.*`; `pillow >=4.1.1,<7` -> `pillow>=4.1.1,<7`; `six` -> `six`."""
    name, _, version = spec.partition(" ")
    version = version.strip()
    if not version:
        return name
    if version[0].isdigit():
        version = "==" + version
    return name + version


def torchwin_rows(rendered, release):
    """What recipes/pytorch builds of `release` for linux-64: ({CUDA X.Y or None}, {Python})."""
    rows = [v for v in rendered if v.name == "pytorch" and v.version == release and v.subdir == "linux-64"]
    cudas = {None if v.variant["cuda_compiler_version"] == "None" else v.variant["cuda_compiler_version"] for v in rows}
    return cudas, {v.variant["python"] for v in rows}


def era_requirements(rendered, release, python):
    """The pip requirements besides the wheels: numpy as recipes/pytorch builds `release` against for
    this Python (its host pin, below 2), and torchvision's run requirements (pillow, six, tqdm)."""
    torch_rows = [v for v in rendered if v.name == "pytorch" and v.version == release and v.subdir == "linux-64"
                  and v.variant["python"] == python]
    if torch_rows:
        numpy = [conda_to_pip(s) for s in torch_rows[0].host_requirements if s.split(" ")[0] == "numpy"]
        numpy = [numpy[0] + ",<2"]
    else:
        numpy = [NUMPY_WITHOUT_ROW[python]]
    vision = torchvision_pairs()[release]
    vision_rows = [v for v in rendered if v.name == "torchvision" and v.version == vision and v.subdir == "linux-64"]
    extra = [conda_to_pip(s) for s in vision_rows[0].depends if s.split(" ")[0] in PIP_PACKAGES]
    return numpy + extra


def what_the_wheel_is(rendered, release, python):
    """One sentence: how upstream's wheel compares with what recipes/pytorch would build."""
    cuda = WHEEL_CUDA[release]
    short = ".".join(cuda.split(".")[:2])
    cudas, pythons = torchwin_rows(rendered, release)
    ours = ", ".join(sorted("CUDA %s" % c for c in cudas if c)) + (" and CPU" if None in cudas else "")
    parts = []
    if short in cudas:
        parts.append("the wheel is CUDA %s, as torchwin's linux-64 cuda%s build" % (cuda, short))
    else:
        parts.append("the wheel is CUDA %s, torchwin builds %s for linux-64 as %s: checked as the CUDA %s build it "
                     "is, not for a torchwin row's CUDA" % (cuda, release, ours, short))
    if python not in pythons:
        parts.append("torchwin has no Python %s row for %s" % (python, release))
    if release in WHEEL_ARCHS:
        parts.append("run_test.py checks the archs torch lists, %s" % WHEEL_ARCHS[release])
    else:
        parts.append("run_test.py skips the archs (torch lists them without a GPU from 1.6 on); the GPU code is "
                     "read from the libraries instead")
    return "; ".join(parts)


def gpu_code_note(release):
    """What the GPU code in the wheel says against the sm_30 promise of torchwin's 1.0.x rows."""
    code = WHEEL_GPU_CODE[release].split()
    return "%s%s" % (" ".join(code), "" if "sm_30" in code else " (no sm_30)")


# ---- the GPU code inside a wheel, read without a GPU ----------------------------------------------

FATBIN_MAGIC = 0xBA55ED50  # the header of each fat binary in an ELF's .nv_fatbin section


def elf_section(handle, wanted):
    """(offset, size) of the ELF64 section named `wanted`, or None."""
    handle.seek(0)
    header = handle.read(64)
    if header[:4] != b"\x7fELF" or header[4] != 2:
        return None
    table, = struct.unpack_from("<Q", header, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", header, 0x3A)
    handle.seek(table)
    raw = handle.read(entry_size * count)
    entries = [struct.unpack_from("<IIQQQQIIQQ", raw, i * entry_size) for i in range(count)]
    if names_index >= len(entries):
        return None
    handle.seek(entries[names_index][4])
    names = handle.read(entries[names_index][5])
    for entry in entries:
        name = names[entry[0]:names.find(b"\0", entry[0])].decode("ascii", "replace")
        if name == wanted:
            return entry[4], entry[5]
    return None


def fatbin_archs(data):
    """Counter of ('sm_NN' | 'compute_NN') over the entries of the fat binaries in `data`: an entry of kind 2
    is machine code (SASS) for sm_NN, kind 1 PTX for compute_NN (the arch is the entry's u32 at +28)."""
    found = collections.Counter()
    pos = 0
    while pos + 16 <= len(data):
        magic, _, header_size, size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # containers are 8-byte aligned
            continue
        entry, end = pos + header_size, pos + header_size + size
        while entry + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch, = struct.unpack_from("<I", data, entry + 28)
            if kind in (1, 2):
                found["%s_%d" % ("compute" if kind == 1 else "sm", arch)] += 1
            if not entry_header:
                break
            entry += entry_header + payload
        pos = end
    return found


def wheel_gpu_code(wheel, folder):
    """The GPU architectures with code in the shared libraries under `folder` of a wheel (torch/lib/,
    torchvision/): 'sm_35 sm_50 ... compute_50', sorted. Each library is unpacked to a temporary file."""
    found = collections.Counter()
    scratch = tempfile.mkdtemp(prefix="torchwin-fatbin-")
    try:
        with zipfile.ZipFile(str(wheel)) as archive:
            for info in archive.infolist():
                name = info.filename
                if not name.startswith(folder) or ".so" not in name.rsplit("/", 1)[-1]:
                    continue
                target = os.path.join(scratch, "lib.so")
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                with open(target, "rb") as handle:
                    where = elf_section(handle, ".nv_fatbin")
                    if where:
                        handle.seek(where[0])
                        found.update(fatbin_archs(handle.read(where[1])))
                os.remove(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def key(name):
        kind, number = name.split("_")
        return (kind != "sm", int(number))

    return " ".join(sorted(found, key=key))


# ---- results and the README tables ------------------------------------------------------------

BEGIN = "<!-- upstream-wheels table: generated by `python tests/recipes/upstream_wheels.py`; do not edit -->"
END = "<!-- end of upstream-wheels table -->"


def result_path(cache, release, python):
    return Path(cache) / "results" / ("torch-%s-py%s.json" % (release, python))


def write_result(cache, release, python, record):
    path = result_path(cache, release, python)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_results(cache):
    out = {}
    for release, python in matrix():
        path = result_path(cache, release, python)
        if path.is_file():
            out[release, python] = json.loads(path.read_text())
    return out


def counts(summary):
    return "%d passed, %d failed, %d skipped" % (summary["passed"], summary["failed"], summary["skipped"])


def table(results, which, notes, earlier=None):
    """The markdown table of one README: `pytorch` or `torchvision`; notes: {(release, python): what the wheel
    is}; earlier: {(release, python): result cell} of the table so far, kept for runs the cache has no record of."""
    pairs = torchvision_pairs()
    earlier = earlier or {}
    if which == "pytorch":
        lines = ["| torch | Python | wheel's CUDA | GPU code in torch/lib | recipes/pytorch/run_test.py | "
                 "what the wheel is |", "|---|---|---|---|---|---|"]
    else:
        lines = ["| torchvision | torch | Python | GPU code in torchvision | recipes/torchvision/run_test.py |",
                 "|---|---|---|---|---|"]
    for release, python in matrix():
        record = results.get((release, python))
        if which == "pytorch":
            cell = counts(record["pytorch"]) if record else earlier.get((release, python), "not run")
            note = notes[release, python]
            lines.append("| %s | %s | %s | %s | %s | %s |" % (release, python, WHEEL_CUDA[release],
                                                              gpu_code_note(release), cell, note))
        else:
            cell = counts(record["torchvision"]) if record else earlier.get((release, python), "not run")
            vision = PYPI_TORCHVISION.get(pairs[release], pairs[release])
            lines.append("| %s | %s | %s | %s | %s |" % (vision, release, python,
                                                         VISION_GPU_CODE[pairs[release]] or "none", cell))
    return "\n".join(lines)


def replace_table(text, new_table, where):
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise SystemExit("error: %s: expected one table between the markers %r and %r" % (where, BEGIN, END))
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return head + BEGIN + "\n" + new_table + "\n" + END + tail


def write_readmes(cache):
    from torchwin import recipes

    rendered = recipes.render([ROOT / "recipes" / "pytorch", ROOT / "recipes" / "torchvision"], ["linux-64"])
    notes = {cell: what_the_wheel_is(rendered, *cell) for cell in matrix()}
    results = read_results(cache)
    for which in ("pytorch", "torchvision"):
        path = ROOT / "recipes" / which / "README.md"
        text = path.read_text()
        rows = table_rows(text)
        earlier = {(r[0], r[1]) if which == "pytorch" else (r[1], r[2]): r[4] for r in rows if len(r) > 4}
        text = replace_table(text, table(results, which, notes, earlier), path)
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    ran = len(results)
    print("wrote the tables of recipes/pytorch/README.md and recipes/torchvision/README.md: %d of %d release x "
          "Python runs recorded in %s" % (ran, len(matrix()), cache))


def table_rows(text):
    """The (first cell, ..., ) rows of the generated table in a README's text."""
    if BEGIN not in text or END not in text:
        return []
    body = text.split(BEGIN)[1].split(END)[0]
    return [tuple(c.strip() for c in line.strip().strip("|").split("|")) for line in body.strip().splitlines()[2:]]


def main(argv):
    cache = os.environ.get(CACHE_ENV, "")
    if len(argv) > 1 or not cache or not Path(cache).is_dir():
        print("usage: %s=DIR python tests/recipes/upstream_wheels.py  (DIR: the download cache the "
              "upstream_wheels tests filled)" % CACHE_ENV, file=sys.stderr)
        return 2
    write_readmes(cache)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
