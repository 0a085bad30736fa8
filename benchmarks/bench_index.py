"""Step 3, channel index: channels of real packages built by the engine, indexed by py-rattler.

The packages are variants of one tiny metadata-only recipe, built once per
run and shared by every channel size. A full index
runs `rattler.index.index_fs` on a folder of N packages with no repodata yet;
adding one goes through `torchwin.channel.command.add_packages`, the path `torchwin
build` takes: it checks the package, computes its record and merges it into the
live repodata.json, with no indexer run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from bench_util import clock

# Metadata only, like pytorch-select's selector packages: no build script, so the engine
# builds one in ~20 ms instead of ~150 ms with an interpreter to start, and 1000 stay cheap.
TINY_RECIPE = """\
package:
  name: bench-tiny-${{ idx }}
  version: "1.0.${{ idx }}"
build:
  number: 0
  string: i${{ idx }}_0
  noarch: generic
requirements:
  run:
    - python
about:
  summary: A benchmark package (variant ${{ idx }} of one recipe)
"""


def build(params: dict) -> dict:
    """Build `count` variants of the tiny recipe into out_dir/noarch."""
    from rattler_build import PlatformConfig, RenderConfig, Stage0Recipe, ToolConfiguration, VariantConfig

    count = int(params["count"])
    out_dir = Path(params["out_dir"])
    started = clock()
    recipe = Stage0Recipe.from_yaml(TINY_RECIPE, recipe_dir=Path(params["recipe_dir"]))
    variants = recipe.render(VariantConfig({"idx": [str(i) for i in range(count)]}),
                             RenderConfig(platform=PlatformConfig(target_platform="noarch")))
    render_s = clock() - started
    started = clock()
    files = []
    for variant in variants:
        result = variant.run_build(tool_config=ToolConfiguration(test_strategy="skip"), output_dir=out_dir,
                                   channels=[], no_build_id=True)
        files.extend(str(p) for p in result.packages)
    build_s = clock() - started
    return {"packages": len(files), "files": sorted(files, key=_index_of), "render_s": round(render_s, 3),
            "seconds": round(build_s, 3), "per_package_ms": round(1000 * build_s / max(1, len(files)), 1)}


def _index_of(path: str) -> int:
    return int(Path(path).name.split("-")[2])


def _index(channel: Path) -> None:
    from rattler.index import index_fs

    # The settings torchwin's channel store uses (repodata.json.zst, no shards).
    asyncio.run(index_fs(channel, write_zst=True, write_shards=False, force=False))


def full_index(params: dict) -> dict:
    """Fill a fresh channel with the first N packages and index it from nothing; then once more, unchanged."""
    channel = Path(params["channel"])
    files = [Path(f) for f in params["files"]]
    subdir = channel / "noarch"
    subdir.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            os.link(path, subdir / path.name)
        except OSError:
            shutil.copyfile(path, subdir / path.name)
    started = clock()
    _index(channel)
    index_s = clock() - started
    started = clock()
    _index(channel)
    noop_s = clock() - started
    return {"packages": len(files), "index_s": round(index_s, 3), "noop_reindex_s": round(noop_s, 3),
            "repodata_bytes": (subdir / "repodata.json").stat().st_size}


def add_one(params: dict) -> dict:
    """Add new packages one at a time to an indexed channel, the way `torchwin build` does; the median add."""
    from torchwin.channel import command as channel_api
    from torchwin.channel.config import parse_channel_config

    channel = Path(params["channel"])
    files = [Path(f) for f in params.get("files") or [params["file"]]]
    config = parse_channel_config({"name": "bench", "anaconda": {"owner": "bench"}, "labels": ["main"]})
    times = []
    for path in files:
        started = clock()
        channel_api.add_packages(channel, [path], config=config)
        times.append(clock() - started)
    times.sort()
    return {"channel_packages": int(params["channel_packages"]), "adds": len(times),
            "seconds": round(times[len(times) // 2], 4), "max_s": round(times[-1], 4)}
