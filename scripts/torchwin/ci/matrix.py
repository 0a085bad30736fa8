"""Turn `torchwin render --json` output into the GitHub Actions build matrix.

The matrix is never typed into a workflow: the plan job renders the recipes
and this module groups the rendered packages into build jobs. One job per
buildable variant of a recipe -- (recipe, target platform, version, python,
CUDA) -- because one `conda build` call with that variant pinned builds every
output of it. noarch outputs ride along with whichever job builds them, and so
do the packages of a companion recipe (recipes/pytorch-cpu; torchwin.ci.stages).

Which recipes get build jobs, in which stage, and which job needs which are read
from the render too (torchwin.ci.stages).

Each entry carries what its jobs need and nothing they would have to compute:
the runner label, the CUDA version to install, the full variant to pin (so
`conda build -m variant.yaml` renders exactly this one), the artifact it
uploads and the ones it downloads, the package specs and the recipe's own
script test (script and environment, as the recipe's `tests:` renders them)
the test job runs on a clean runner, and cache keys.

--only selects entries by id (any recipe); the jobs they need come along
(magma for a CUDA pytorch), and so do the jobs that need only what is
selected (the torchvision of a selected pytorch).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path

from torchwin.ci.anaconda_api import build_key
from torchwin.ci.stages import (
    attach_companions,
    before_main,
    check_job_recipes,
    companion_recipes,
    compiled_recipes,
    link_entries,
    stages,
)
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


def script_test(records, recipe_dir):
    """(script, env pairs, extra specs) of the recipe's `python X.py` test, as rendered; None if it has none."""
    found = []
    for record in records:
        for test in record.get("tests") or ():
            script = test.get("script") if isinstance(test, dict) else None
            if not isinstance(script, dict):
                continue
            content = script.get("content")
            lines = [line.strip() for line in (content if isinstance(content, list) else str(content).splitlines())
                     if line.strip()]
            match = re.fullmatch(r"python (\S+\.py)", lines[0]) if len(lines) == 1 else None
            if not match:
                continue
            # The test job decides about the GPU (TORCHWIN_REQUIRE_CUDA=1 on the GPU runner only).
            env = [f"{k}={v}" for k, v in sorted((script.get("env") or {}).items()) if k != "TORCHWIN_REQUIRE_CUDA"]
            spaced = [pair for pair in env if re.search(r"\s", pair)]
            if spaced:
                raise Failure(f"{record['name']}: the test's environment {spaced[0]!r} has a space; the test job "
                              "passes the values as words")
            extra = [str(s) for s in (test.get("requirements") or {}).get("run", ())]
            found.append((f"{recipe_dir}/{match.group(1)}", env, extra))
    if len({f[0] for f in found}) > 1:
        raise Failure(f"{recipe_dir}: one package test script per build job, found {', '.join(f[0] for f in found)}")
    return found[0] if found else None


def artifact_pattern(names):
    """A download-artifact `pattern` (minimatch) for exactly these artifact names."""
    names = sorted(names)
    if not names:
        return ""
    return names[0] if len(names) == 1 else "{" + ",".join(names) + "}"


def build_matrix(records, recipes=("pytorch",), runners=Runners(), only=(), recipes_root="recipes",
                 expect_version=None, zip_info=None, job_recipes=(), published=frozenset()):
    """Every build job, by recipe and platform kind, and the test jobs.

    Returns {"windows", "linux", "gpu", "recipes", "stages", "tests"}: windows/linux are the jobs of
    `recipes` (the main recipe, pytorch); recipes maps every compiled recipe to its {"windows", "linux"}
    jobs; stages lists the compiled recipes stage by stage; tests holds one clean-runner test per job
    with a script test; gpu the Windows CUDA ones of those, on the GPU runner.
    only: fnmatch patterns over entry ids (empty: everything).
    zip_info: callable(recipe_dir, platform) -> (zip_groups, values); default reads variants.yaml.
    job_recipes: the compiled recipes the workflow has build jobs for, in the order its jobs run
    (empty: no check); each gets outputs, empty when it renders nothing.
    published: build keys (anaconda_api.build_key) the channel label already holds. A job of a stage
    before the main recipe's whose every package is among them is not built again (magma, from an
    unchanged recipe); the jobs that need it list its packages in `from_channel` and take them from
    the published label instead of an artifact.
    """
    zip_info = zip_info or recipe_zip_info
    machine = compiled_recipes(records, recipes)
    order = stages(records, machine)
    stage_of = {recipe: number for number, names in enumerate(order) for recipe in names}
    if job_recipes:
        check_job_recipes(job_recipes, order)
    groups = group(records, tuple(machine))
    if not any(key[0] in recipes for key in groups):
        raise Failure("render output has no buildable package of recipe(s) {}".format(", ".join(recipes)))
    if expect_version:
        wrong = sorted({k[2] for k in groups if k[0] in recipes and k[2] != expect_version})
        if wrong:
            raise Failure(f"the recipe renders version(s) {', '.join(wrong)} but nightly-version says "
                          f"{expect_version}: the recipe and `torchwin nightly-version` disagree on <next>")
    # A version only goes into the id when one key has several (e.g. rendering all releases).
    counts = {}
    for recipe, platform, version, python, cuda in groups:
        counts[(recipe, platform, python, cuda)] = counts.get((recipe, platform, python, cuda), 0) + 1
    zips = {}
    entries = []
    records_of = {}
    for (recipe, platform, version, python, cuda), members in sorted(
            groups.items(), key=lambda item: (stage_of[item[0][0]], item[0])):
        short = entry_id(recipe, platform, python, cuda)
        several = counts[(recipe, platform, python, cuda)] > 1
        ident = entry_id(recipe, platform, python, cuda, version if several else None)
        recipe_dir = _recipe_dir(recipe, recipes_root)
        if (recipe_dir, platform) not in zips:
            zips[(recipe_dir, platform)] = zip_info(recipe_dir, platform)
        variant = complete_zips(pinned_variant(members), *zips[(recipe_dir, platform)])
        packages = sorted(members, key=lambda r: r["name"])
        specs = ["{} =={} {}".format(r["name"], r["version"], r["build_string"]) for r in packages]
        test = script_test(packages, recipe_dir)
        records_of[ident] = packages
        entries.append({
            "id": ident,
            "recipe": recipe,
            "recipe_dir": recipe_dir,
            "stage": stage_of[recipe],
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
            "specs": specs,
            "artifact": "packages-" + ident,
            "test_script": test[0] if test else "",
            "test_env": test[1] if test else [],
            "test_specs": specs + (test[2] if test else []),
            # The compiler cache survives version bumps: keyed by what changes the compiled objects.
            "cache_key": short,
        })
    link_entries(entries, records_of)
    companions = companion_recipes(records, recipes)
    attach_companions(entries, records_of, [r for r in records if r["recipe"] in companions and not r.get("skip")])
    for entry in entries:
        if entry["companion_dir"]:
            entry["companion_dir"] = _recipe_dir(entry["companion_dir"], recipes_root)
            # The test job installs the alias too, beside the build it names.
            entry["test_specs"].append(entry.pop("companion_package"))
    if only:
        selected = {e["id"] for e in entries if any(fnmatch.fnmatchcase(e["id"], p) for p in only)}
        if not selected:
            example = entry_id("pytorch", "win-64", "3.6", "9.0")
            raise UserError(f"--only {' '.join(only)} matches no variant; ids look like {example}")
        keep = set(selected)
        for entry in entries:
            if entry["id"] in selected:
                keep |= set(entry["needs"])
        # Jobs that build on the kept ones alone (the torchvision of a selected pytorch) come along;
        # entries are in stage order, so one pass sees a job after everything it needs.
        for entry in entries:
            if entry["needs"] and set(entry["needs"]) & selected and set(entry["needs"]) <= keep:
                keep.add(entry["id"])
                selected.add(entry["id"])
        entries = [e for e in entries if e["id"] in keep]
    # The stages before the main recipe's build only what a later job needs (magma for the CUDA
    # releases the pytorch jobs build, not every CUDA magma's variants.yaml lists).
    main_stage = min(stage_of[r] for r in recipes if r in stage_of)
    needed = {dep for e in entries for dep in e["needs"]}
    entries = [e for e in entries if e["stage"] >= main_stage or e["id"] in needed]
    reused = {e["id"] for e in entries if e["stage"] < main_stage and all(
        build_key(r["subdir"], r["name"], r["version"], r["build_string"]) in published for r in records_of[e["id"]])}
    for entry in entries:
        entry["from_channel"] = sorted("{} {} {}".format(r["name"], r["version"], r["build_string"])
                                       for d in entry["needs"] if d in reused for r in records_of[d])
        entry["needs"] = [d for d in entry["needs"] if d not in reused]
    entries = [e for e in entries if e["id"] not in reused]
    by_id = {e["id"]: e for e in entries}
    for entry in entries:
        entry["needs_artifacts"] = [by_id[d]["artifact"] for d in entry["needs"]]
        entry["needs_pattern"] = artifact_pattern(entry["needs_artifacts"])
        # The test job downloads the job's own packages and every package they were built on.
        entry["test_artifacts"] = sorted([entry["artifact"], *entry["needs_artifacts"]])
        entry["test_pattern"] = artifact_pattern(entry["test_artifacts"])

    def kind(entry):
        return PLATFORM_KINDS[entry["target_platform"]]

    matrix = {k: [e for e in entries if e["recipe"] in recipes and kind(e) == k] for k in ("windows", "linux")}
    matrix["recipes"] = {recipe: {k: [e for e in entries if e["recipe"] == recipe and kind(e) == k]
                                  for k in ("windows", "linux")} for recipe in sorted(machine | set(job_recipes))}
    matrix["stages"] = order
    matrix["tests"] = [e for e in entries if e["test_script"]]
    gpu = []
    if runners.gpu:
        for entry in matrix["tests"]:
            if kind(entry) == "windows" and entry["cuda"] != CPU:
                gpu.append(dict(entry, runner=runs_on(runners.gpu)))
    matrix["gpu"] = gpu
    return matrix


def support_recipes(records, recipes=("pytorch",), recipes_root="recipes"):
    """Recipe folders the toolchain job builds: the script-only ones (toolchain and selection packages)."""
    machine = compiled_recipes(records, recipes) | companion_recipes(records, recipes)
    names = sorted({r["recipe"] for r in records if r["recipe"] not in machine})
    return [_recipe_dir(n, recipes_root) for n in names]


def skip_rebuilt_artifacts(matrix, recipes=("pytorch",)):
    """Artifacts of the stages before the main recipe's (magma): rebuilt every night from an unchanged
    recipe, so the same file names as the copies already published: publish keeps those (--skip-rebuilt)."""
    earlier = set(before_main(matrix["stages"], recipes))
    return sorted(e["artifact"] for r in earlier for k in ("windows", "linux") for e in matrix["recipes"][r][k])


def parse_only(values):
    """--only takes patterns separated by commas or spaces (a workflow_dispatch input is one string)."""
    out = []
    for value in values or ():
        out += [p for p in re.split(r"[,\s]+", value) if p]
    return out


def github_outputs(matrix, support=(), rebuilt=()):
    """Step outputs: a matrix ({"include": [...]}) and a count per job kind, plus all entries together.

    windows, linux, all, count: the main recipe's (pytorch's) build jobs. <recipe>-windows,
    <recipe>-linux (+ -count): every compiled recipe's. tests, gpu (+ -count): the test jobs.
    stages: the compiled recipes, stage by stage (JSON). support-recipes: what the toolchain job
    builds. skip-rebuilt-artifacts: artifacts publish keeps the published copy of.
    """
    def include(entries):
        return json.dumps({"include": entries}, separators=(",", ":"), sort_keys=True)

    pairs = []
    every = matrix["windows"] + matrix["linux"]
    for kind in ("windows", "linux", "gpu"):
        pairs.append((kind, include(matrix[kind])))
        pairs.append((kind + "-count", str(len(matrix[kind]))))
    pairs.append(("all", include(every)))
    pairs.append(("count", str(len(every))))
    for recipe, kinds in sorted(matrix["recipes"].items()):
        for kind in ("windows", "linux"):
            pairs.append((f"{recipe}-{kind}", include(kinds[kind])))
            pairs.append((f"{recipe}-{kind}-count", str(len(kinds[kind]))))
    pairs.append(("tests", include(matrix["tests"])))
    pairs.append(("tests-count", str(len(matrix["tests"]))))
    pairs.append(("stages", json.dumps(matrix["stages"], separators=(",", ":"))))
    pairs.append(("support-recipes", " ".join(support)))
    pairs.append(("skip-rebuilt-artifacts", " ".join(rebuilt)))
    return pairs


def variant_file_text(variant):
    """A variants.yaml that pins one value per key (what `conda build -m FILE` merges over the recipe's)."""
    import yaml

    if not isinstance(variant, dict) or not variant:
        raise UserError("the variant must be a non-empty JSON object, e.g. {\"python\": \"3.6\"}")
    lines = ["# Written by `torchwin ci variant-file`: pins one build of the recipe's matrix.\n"]
    body = {str(k): [v] for k, v in sorted(variant.items())}
    return "".join(lines) + yaml.safe_dump(body, default_flow_style=False, sort_keys=True)
