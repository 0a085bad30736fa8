"""Real conda packages for tests, assembled by the engine (py-rattler-build) from one file each."""

import os
from datetime import datetime, timezone
from pathlib import Path

from rattler_build import ArchiveType, assemble_package


def make_package(out, name="hello", version="1.0", build="h0_0", subdir="linux-64", content="hi",
                 build_number=None, depends=(), archive=ArchiveType.Conda, timestamp=None, payload=None,
                 **about):
    """out/<subdir>/<name>-<version>-<build>.<ext>, holding share/<name>.txt (or payload bytes).

    The build number defaults to the build string's last `_N`; the file gets mode
    0600, as rattler-build leaves its packages.
    """
    files = Path(out) / f".files-{name}-{version}-{build}-{content}"
    (files / "share").mkdir(parents=True, exist_ok=True)
    if payload is not None:
        (files / "share" / f"{name}.bin").write_bytes(payload)
    else:
        (files / "share" / f"{name}.txt").write_text(content)
    if build_number is None:
        tail = build.rsplit("_", 1)[-1]
        build_number = int(tail) if tail.isdigit() else 0
    result = assemble_package(
        name, version, subdir, build, Path(out) / subdir, files_dir=files, build_number=build_number,
        depends=list(depends), archive_type=archive,
        timestamp=timestamp or datetime(2019, 4, 1, tzinfo=timezone.utc), **about)
    path = Path(result.path)
    os.chmod(path, 0o600)
    return path


def labelled_package(out, label, package_format="conda"):
    """A package the engine builds from a recipe with `extra: torchwin: label: L`, as recipes/cuda-runtime."""
    from rattler_build import PlatformConfig, RenderConfig, Stage0Recipe, ToolConfiguration, VariantConfig

    recipe = Stage0Recipe.from_yaml(
        "schema_version: 1\n"
        "package: {name: cudnn, version: '7.1.3'}\n"
        "build: {number: 0, string: cuda9.1_0, script: ['echo packaged']}\n"
        f"extra: {{torchwin: {{label: {label}}}}}\n"
    )
    [variant] = recipe.render(VariantConfig(), RenderConfig(platform=PlatformConfig(target_platform="linux-64")))
    result = variant.run_build(tool_config=ToolConfiguration(test_strategy="skip"), output_dir=out, channels=[],
                               no_build_id=True, package_format=package_format)
    [path] = result.packages
    return path


# channel.yaml for channel tests: labels main and nightly, nightlies kept 14 days (at least the newest 3).
CHANNEL_CONFIG = """\
name: torchwin
anaconda:
  owner: torchwin
labels: [main, nightly]
retention:
  nightly: {keep_days: 14, keep_newest: 3}
"""
