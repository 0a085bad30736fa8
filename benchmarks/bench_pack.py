"""Step 2, packaging: a PyTorch-sized payload packed by the engine and by conda-package-handling.

The payload is the installed torch package's files (site-packages/torch without
__pycache__, whose content depends on what was imported). Quick and smoke runs
pack a sample of it with the same mix: an even share of the small files and
evenly spaced blocks of every large library, so the compression ratios match
the whole. Without torch, a synthetic payload of similar compressibility stands
in, and the output says so.

Each packing configuration runs in its own process (see run.py): pack, then
extract the result with py-rattler (what pixi/mamba/rattler installs use) and
with conda-package-handling (what conda uses), each timed.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
from pathlib import Path

from bench_util import MB, clock, peak_rss_mb, rate

EXCLUDE = ("**/__pycache__/**",)
LARGE_FILE = 8 * 1024 * 1024  # files this big are sampled block by block
PACKAGE_NAME = "pytorch-payload"
PACKAGE_VERSION = "2.13.0"


def torch_dir():
    """site-packages/torch of the installed torch, found without importing it (slow, and not needed)."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent


def _payload_files(root: Path):
    files = []
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or path.is_symlink() or not path.is_file():
            continue
        files.append((path, path.stat().st_size))
    return files


def prepare_payload(target_bytes, workdir: Path, choice: str = "torch") -> dict:
    """The folder to pack and what it is; target_bytes None means all of it.

    choice: "torch" (the installed torch, else synthetic), "synthetic", or a
    folder, e.g. a Windows CUDA build's site-packages/torch on a build machine.
    """
    from bench_util import package_version

    root = None
    source = ""
    note = ""
    if choice == "torch":
        root = torch_dir()
        source = f"torch {package_version('torch') or '?'} ({root})"
        if root is None:
            note = ("torch is not installed: a synthetic payload of similar compressibility stands in "
                    "(pip install torch==2.13.0 for the real one)")
    elif choice != "synthetic":
        root = Path(choice).resolve()
        source = f"folder {root}"
    if root is None:
        folder = workdir / "payload-synthetic"
        count = make_synthetic(folder, target_bytes or 700 * MB)
        return {"dir": str(folder), "source": "synthetic", "files": count, "bytes": _tree_bytes(folder),
                "sampled": False, "note": note or "a synthetic payload of similar compressibility to torch's files"}
    files = _payload_files(root)
    total = sum(size for _, size in files)
    if target_bytes is None or target_bytes >= total:
        return {"dir": str(root), "source": source, "files": len(files), "bytes": total, "sampled": False,
                "exclude": list(EXCLUDE)}
    folder = workdir / "payload-sample"
    count = sample_tree(root, files, total, target_bytes, folder)
    return {"dir": str(folder), "source": source, "files": count, "bytes": _tree_bytes(folder),
            "sampled": True, "whole_bytes": total, "whole_files": len(files)}


def sample_tree(root: Path, files, total: int, target: int, folder: Path) -> int:
    """Copy a share `target/total` of root into folder, keeping its mix of file kinds and sizes.

    Large files keep that share of their bytes as evenly spaced blocks; of the
    small files every n-th one is kept (sorted by path, so every folder and kind
    contributes), which keeps both their byte share and their count share.
    """
    share = target / total
    block = 1024 * 1024 if target >= 16 * MB else 256 * 1024
    count = 0
    small_index = 0
    for path, size in files:
        dest = folder / path.relative_to(root)
        if size >= LARGE_FILE:
            blocks = max(1, round(size * share / block))
            step = (size - block) / max(1, blocks - 1)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as src, open(dest, "wb") as out:
                for i in range(blocks):
                    src.seek(int(i * step))
                    out.write(src.read(block))
            count += 1
            continue
        due = int((small_index + 1) * share) > int(small_index * share)
        small_index += 1
        if due:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            count += 1
    return count


def make_synthetic(folder: Path, nbytes: int, seed: int = 20190601) -> int:
    """Code-like data: 85% in one library, the rest in small files; returns the file count.

    Machine code repeats: the same instruction sequences, templated functions
    with other offsets. So: a pool of short byte sequences built from a skewed
    token alphabet, picked with a skewed frequency, one 4-byte edit each. The
    pool is renewed every 8 MB (zstd's window at level 19), so the ratio does
    not depend on the payload's size. Checked against torch 2.13.0's files:
    close at zstd 10 and 19 (ratio ~0.25 and ~0.21); level 3 and bzip2 do
    somewhat worse on it than on torch.
    """
    rng = random.Random(seed)
    tokens = [rng.randbytes(rng.randint(1, 6)) for _ in range(512)]
    token_weights = _cumulative(1.0 / (rank + 1) for rank in range(512))
    pool_size = 20000
    pool_weights = _cumulative(1.0 / (rank + 1) ** 0.5 for rank in range(pool_size))
    state = {"pool": [], "left": 0}

    def chunk(size):
        parts = []
        filled = 0
        while filled < size:
            if state["left"] <= 0:
                state["pool"] = [b"".join(rng.choices(tokens, cum_weights=token_weights, k=rng.randint(16, 120)))
                                 for _ in range(pool_size)]
                state["left"] = 8 * MB
            piece = bytearray(rng.choices(state["pool"], cum_weights=pool_weights)[0])
            at = rng.randrange(len(piece))
            piece[at:at + 4] = rng.randbytes(4)
            parts.append(bytes(piece))
            filled += len(piece)
            state["left"] -= len(piece)
        return b"".join(parts)[:size]

    (folder / "lib").mkdir(parents=True, exist_ok=True)
    big = int(nbytes * 0.85)
    with open(folder / "lib" / "libsynthetic.so", "wb") as out:
        written = 0
        while written < big:
            piece = chunk(min(1024 * 1024, big - written))
            out.write(piece)
            written += len(piece)
    small_total = nbytes - big
    count = 1
    written = 0
    while written < small_total:
        size = min(rng.randint(2000, 20000), small_total - written)
        sub = folder / "include" / f"d{count % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{count:05d}.h").write_bytes(chunk(size))
        written += size
        count += 1
    return count


def _cumulative(weights):
    out = []
    total = 0.0
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cph_available():
    """(version, None) when conda-package-handling imports, else (None, why)."""
    try:
        import conda_package_handling  # noqa: F401
        from conda_package_handling import api  # noqa: F401
    except ImportError as exc:
        return None, f"conda-package-handling is not installed ({exc}); pip install conda-package-handling"
    from bench_util import package_version

    return package_version("conda-package-handling") or "?", None


def host_subdir() -> str:
    import sys

    return "win-64" if sys.platform == "win32" else "linux-64"


def run(params: dict) -> dict:
    """Pack the payload once with one configuration, then extract the package (timed)."""
    payload = params["payload"]
    out_dir = Path(params["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    tool = params["tool"]
    level = params.get("level")
    threads = params.get("threads")
    ext = ".conda" if params["format"] == "conda" else ".tar.bz2"
    tag = "{}_l{}_t{}".format("cph" if tool == "conda-package-handling" else "rb", level or "d", threads or "d")

    cpu_before = _cpu_seconds()
    started = clock()
    if tool == "rattler-build":
        path = _pack_engine(payload, out_dir, ext, level, threads, tag)
    else:
        path = _pack_cph(Path(params["cph_prefix"]), out_dir, ext, level, threads, tag)
    seconds = clock() - started
    # CPU time barely moves when other work shares the machine; wall time does.
    cpu_seconds = _cpu_seconds() - cpu_before
    peak_pack = peak_rss_mb()
    size = path.stat().st_size

    extract_dir = Path(params.get("keep_extract_to") or out_dir / ("x-" + tag))
    started = clock()
    _extract_rattler(path, extract_dir)
    extract_rattler = clock() - started

    extract_cph = None
    version, _why = cph_available()
    if version:
        from conda_package_handling import api

        other = out_dir / ("y-" + tag)
        started = clock()
        api.extract(str(path), dest_dir=str(other))
        extract_cph = clock() - started
        shutil.rmtree(other, ignore_errors=True)
    if not params.get("keep_extract_to"):
        shutil.rmtree(extract_dir, ignore_errors=True)
    path.unlink()
    nbytes = payload["bytes"]
    return {
        "tool": tool,
        "format": ext,
        "level": level,
        "threads": threads,
        "seconds": round(seconds, 3),
        "cpu_s": round(cpu_seconds, 3),
        "mb_per_s": rate(nbytes, seconds),
        "size_bytes": size,
        "size_mb": round(size / MB, 2),
        "ratio": round(size / nbytes, 4),
        "extract_rattler_s": round(extract_rattler, 3),
        "extract_cph_s": round(extract_cph, 3) if extract_cph is not None else None,
        "peak_rss_pack_mb": peak_pack,
    }


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _pack_engine(payload, out_dir, ext, level, threads, tag) -> Path:
    from rattler_build import ArchiveType, assemble_package, collect_files

    files = collect_files(payload["dir"], exclude_globs=list(payload.get("exclude") or ()) or None)
    output = assemble_package(
        name=PACKAGE_NAME, version=PACKAGE_VERSION, target_platform=host_subdir(), build_string=tag,
        output_dir=out_dir, files=files,
        archive_type=ArchiveType.Conda if ext == ".conda" else ArchiveType.TarBz2,
        compression_level=level if level is not None else (15 if ext == ".conda" else 9),
        compression_threads=threads,
    )
    return Path(output.path)


def _pack_cph(prefix: Path, out_dir, ext, level, threads, tag) -> Path:
    """conda-package-handling packs a prefix that already has info/ (as conda-build hands it over)."""
    from conda_package_handling import api

    name = f"{PACKAGE_NAME}-{PACKAGE_VERSION}-{tag}{ext}"
    options = {}
    if level is not None:
        options["compression_level"] = level
    if threads is not None:
        options["compression_threads"] = threads
    api.create(str(prefix), None, name, out_folder=str(out_dir), **options)
    return out_dir / name


def _extract_rattler(path: Path, dest: Path) -> None:
    from rattler.package_streaming import extract

    dest.mkdir(parents=True, exist_ok=True)
    extract(str(path), str(dest))  # both formats, told apart by the file name
