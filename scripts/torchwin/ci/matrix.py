"""Turn `torchwin render --json` output into the GitHub Actions build matrix.

The matrix is never typed into a workflow: the plan job renders the recipes
and this module groups the rendered packages into build jobs. One job per
buildable variant of a recipe -- (recipe, target platform, version, python,
CUDA) -- because one `conda build` call with that variant pinned builds every
output of it. noarch outputs ride along with whichever job builds them.

Each entry carries what its jobs need and nothing they would have to compute:
the runner label, the CUDA version to install, the full variant to pin (so
`conda build -m variant.yaml` renders exactly this one), the package specs
the test job installs, and cache keys.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

from torchwin.errors import Failure, UserError

PLATFORM_KINDS = {"win-64": "windows", "linux-64": "linux"}
REQUIRED_KEYS = ("recipe", "name", "version", "build_string", "target_platform", "noarch", "variant")
CPU = "none"


@dataclass(frozen=True)
class Runners:
    """Runner labels per kind of job. A comma in a label means several labels (a self-hosted runner)."""

    windows: str = "windows-2022"
    windows_cuda: str = ""  # empty: same as windows
    linux: str = "ubuntu-24.04"
    linux_cuda: str = ""  # empty: same as linux
    gpu: str = ""  # empty: no GPU runner, the GPU matrix is empty

    def pick(self, platform, cuda):
        kind = PLATFORM_KINDS[platform]
        label = getattr(self, kind + "_cuda") if cuda != CPU else ""
        return runs_on(label or getattr(self, kind))

    def plain(self, platform):
        """A clean runner of the platform: where packages are installed and tested as a user would."""
        return runs_on(getattr(self, PLATFORM_KINDS[platform]))


def runs_on(label):
    """`a` -> "a"; `self-hosted, windows, cuda` -> ["self-hosted", "windows", "cuda"] (runs-on takes both)."""
    parts = [p.strip() for p in str(label).split(",") if p.strip()]
    if not parts:
        raise UserError("empty runner label")
    return parts[0] if len(parts) == 1 else parts


def load_records(text, source="render output"):
    """Parse and check `torchwin render --json` output."""
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source} is not JSON ({exc}); "
                        "pass the output of `torchwin render --json`") from None
    if not isinstance(records, list):
        raise UserError(f"{source} must be a JSON list of rendered packages")
    for index, record in enumerate(records):
        missing = [k for k in REQUIRED_KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise UserError(f"{source}: item {index} lacks {', '.join(missing)}")
        if record["target_platform"] not in PLATFORM_KINDS:
            raise UserError(f"{source}: item {index} has target_platform {record['target_platform']!r}; "
                            f"known: {', '.join(PLATFORM_KINDS)}")
    return records


def cuda_of(variant):
    value = variant.get("cuda_compiler_version")
    return CPU if value in (None, "None", "none", "") else str(value)


def _slug(text):
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")


def _recipe_dir(recipe, recipes_root):
    return str(Path(recipe)) if ("/" in recipe or "\\" in recipe) else f"{recipes_root}/{recipe}"


def group(records, recipes=("pytorch",)):
    """{(recipe, platform, version, python, cuda): [records]} for the non-noarch packages of `recipes`."""
    groups = {}
    for record in records:
        if record["recipe"] not in recipes or record["noarch"] or record.get("skip"):
            continue
        variant = record["variant"] or {}
        key = (record["recipe"], record["target_platform"], record["version"],
               str(variant.get("python", "")), cuda_of(variant))
        groups.setdefault(key, []).append(record)
    return groups


def pinned_variant(records):
    """The one variant every record of a job agrees on (target_platform left to the build machine)."""
    merged = {}
    for record in records:
        for key, value in (record["variant"] or {}).items():
            if key == "target_platform":
                continue
            if key in merged and merged[key] != value:
                raise Failure(f"{record['recipe']} {record['target_platform']}: two packages of one build "
                              f"disagree on {key} ({merged[key]!r} vs {value!r}); they cannot be built by "
                              "one conda build call")
            merged[key] = value
    return merged


def complete_zips(variant, zip_groups, values):
    """Pin the zip partners of pinned keys too.

    conda-build merges our variant file over the recipe's variants.yaml; a key
    zipped with a pinned key but not itself pinned would keep all its values and
    the zip would no longer line up. zip_groups: lists of keys; values: the
    recipe's {key: [values]} for the target platform.
    """
    out = dict(variant)
    for keys in zip_groups:
        pinned = [k for k in keys if k in out]
        if not pinned:
            continue
        length = len(values.get(pinned[0], []))
        rows = [i for i in range(length)
                if all(i < len(values.get(k, [])) and str(values[k][i]) == str(out[k]) for k in pinned)]
        if not rows:
            wanted = ", ".join(f"{k}={out[k]}" for k in pinned)
            raise Failure(f"no row of the zip {keys} in the recipe's variants.yaml matches {wanted}")
        for k in keys:
            if k not in out and k in values:
                out[k] = values[k][rows[0]]
    return out


def check_pins(variant, values, where, platform):
    """UserError naming the key unless every pinned value is one the recipe's variants.yaml has."""
    for key, value in sorted(variant.items()):
        if key == "target_platform":
            allowed = [platform]
        elif key in values:
            allowed = [str(v) for v in values[key]]
        else:
            raise UserError(f"--variant-json: {key} is not a key of {where} (for {platform}); "
                            f"keys: {', '.join(sorted(values))}")
        if str(value) not in allowed:
            raise UserError(f"--variant-json: {key}={value!r} is not in {where} (for {platform}); "
                            f"allowed: {', '.join(allowed)}")


def recipe_zip_info(recipe_dir, platform):
    """zip_keys and values of the recipe's variants.yaml, selectors evaluated for `platform`."""
    from torchwin import recipes

    config = recipes.load_variant_config(Path(recipe_dir), platform)
    return [list(g) for g in (config.zip_keys or [])], config.to_dict()


def entry_id(recipe, platform, python, cuda, version=None):
    parts = [recipe, platform, "py" + python if python else "", "cpu" if cuda == CPU else "cuda" + cuda]
    if version:
        parts.append(version)
    return _slug("-".join(p for p in parts if p))


def build_matrix(records, recipes=("pytorch",), runners=Runners(), only=(), recipes_root="recipes",
                 expect_version=None, zip_info=None):
    """The matrix as {"windows": [...], "linux": [...], "gpu": [...]} lists of entries.

    only: fnmatch patterns over entry ids (empty: everything).
    zip_info: callable(recipe_dir, platform) -> (zip_groups, values); default reads variants.yaml.
    """
    zip_info = zip_info or recipe_zip_info
    groups = group(records, recipes)
    if not groups:
        raise Failure("render output has no buildable package of recipe(s) {}".format(", ".join(recipes)))
    if expect_version:
        wrong = sorted({k[2] for k in groups if k[2] != expect_version})
        if wrong:
            raise Failure(f"the recipe renders version(s) {', '.join(wrong)} but nightly-version says "
                          f"{expect_version}: the recipe and `torchwin nightly-version` disagree on <next>")
    # A version only goes into the id when one key has several (e.g. rendering all releases).
    counts = {}
    for recipe, platform, version, python, cuda in groups:
        counts[(recipe, platform, python, cuda)] = counts.get((recipe, platform, python, cuda), 0) + 1
    zips = {}
    entries = []
    for (recipe, platform, version, python, cuda), members in sorted(groups.items()):
        short = entry_id(recipe, platform, python, cuda)
        several = counts[(recipe, platform, python, cuda)] > 1
        ident = entry_id(recipe, platform, python, cuda, version if several else None)
        recipe_dir = _recipe_dir(recipe, recipes_root)
        if (recipe_dir, platform) not in zips:
            zips[(recipe_dir, platform)] = zip_info(recipe_dir, platform)
        variant = complete_zips(pinned_variant(members), *zips[(recipe_dir, platform)])
        packages = sorted(members, key=lambda r: r["name"])
        entries.append({
            "id": ident,
            "recipe": recipe,
            "recipe_dir": recipe_dir,
            "target_platform": platform,
            "version": version,
            "python": python,
            "cuda": cuda,
            # What the smoke test demands be compiled in (run_test.py --expect-variant).
            "expect_variant": "cpu" if cuda == CPU else "cuda" + cuda,
            "runner": runners.pick(platform, cuda),
            "test_runner": runners.plain(platform),
            "variant": variant,
            "packages": ["{} {}".format(r["name"], r["build_string"]) for r in packages],
            # Exact specs: the test job installs what this job built, nothing the solver might prefer.
            "specs": ["{} =={} {}".format(r["name"], r["version"], r["build_string"]) for r in packages],
            # The compiler cache survives version bumps: keyed by what changes the compiled objects.
            "cache_key": short,
        })
    if only:
        entries = [e for e in entries if any(fnmatch.fnmatchcase(e["id"], p) for p in only)]
        if not entries:
            example = entry_id("pytorch", "win-64", "3.6", "9.0")
            raise UserError(f"--only {' '.join(only)} matches no variant; ids look like {example}")
    matrix = {kind: [e for e in entries if PLATFORM_KINDS[e["target_platform"]] == kind]
              for kind in ("windows", "linux")}
    gpu = []
    if runners.gpu:
        for entry in matrix["windows"]:
            if entry["cuda"] != CPU:
                gpu.append(dict(entry, runner=runs_on(runners.gpu)))
    matrix["gpu"] = gpu
    return matrix


def support_recipes(records, recipes=("pytorch",), recipes_root="recipes"):
    """Recipe folders the build needs from this repository (toolchain and selection packages)."""
    names = sorted({r["recipe"] for r in records if r["recipe"] not in recipes})
    return [_recipe_dir(n, recipes_root) for n in names]


def parse_only(values):
    """--only takes patterns separated by commas or spaces (a workflow_dispatch input is one string)."""
    out = []
    for value in values or ():
        out += [p for p in re.split(r"[,\s]+", value) if p]
    return out


def github_outputs(matrix, support=()):
    """Step outputs: a matrix ({"include": [...]}) and a count per job kind, plus all entries together."""
    pairs = []
    every = matrix["windows"] + matrix["linux"]
    for kind in ("windows", "linux", "gpu"):
        pairs.append((kind, json.dumps({"include": matrix[kind]}, separators=(",", ":"), sort_keys=True)))
        pairs.append((kind + "-count", str(len(matrix[kind]))))
    pairs.append(("all", json.dumps({"include": every}, separators=(",", ":"), sort_keys=True)))
    pairs.append(("count", str(len(every))))
    pairs.append(("support-recipes", " ".join(support)))
    return pairs


def variant_file_text(variant):
    """A variants.yaml that pins one value per key (what `conda build -m FILE` merges over the recipe's)."""
    import yaml

    if not isinstance(variant, dict) or not variant:
        raise UserError("the variant must be a non-empty JSON object, e.g. {\"python\": \"3.6\"}")
    lines = ["# Written by `torchwin ci variant-file`: pins one build of the recipe's matrix.\n"]
    body = {str(k): [v] for k, v in sorted(variant.items())}
    return "".join(lines) + yaml.safe_dump(body, default_flow_style=False, sort_keys=True)
