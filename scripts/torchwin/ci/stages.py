"""Build stages of the CI matrix: which recipes need a build machine, in which order, and which job needs which.

All of it is read from `torchwin render --json` records (torchwin.ci.matrix turns
the result into jobs):

  * A recipe is *compiled* when one of its rendered variants calls a compiler
    (the engine records the `<lang>_compiler` key `compiler('c')` or
    `compiler('cuda')` reads, e.g. `cuda_compiler`): it needs a build machine
    with VS2017/gcc and CUDA, so each variant gets a build job (magma,
    pytorch, torchvision). So is a recipe that needs a compiled recipe's
    package (torchvision 0.2.x is pure Python, but built on its pytorch).
    Every other recipe is script-only (vs2017, nvcc, pytorch-select,
    cuda-runtime): the toolchain job builds them all, for both platforms, in
    seconds, before any stage.
  * A *companion* recipe makes only noarch packages and needs a compiled
    recipe's package (recipes/pytorch-cpu: host `pytorch ==V *_cpu_*`). It has
    no jobs of its own: each of its packages is built by the first job that
    builds what it names (Linux before Windows), right after that job's own
    build: once, as publish refuses two different files of one name.
  * A compiled recipe whose packages another compiled recipe requires (build,
    host or run requirements) builds in an earlier stage: magma (stage 0)
    before pytorch (host: magma-cudaXY) before torchvision (host/run: pytorch).
  * Entry by entry, a job needs the jobs whose packages match its
    requirements (matched as the solver would, with py-rattler's MatchSpec;
    of several matches, those that agree on the shared variant values such as
    python): the torchvision job of py3.6 CUDA 9.0 needs that pytorch job and,
    through it, the magma-cuda90 job. `needs_artifacts` names their
    artifacts; a requirement that names a package a compiled recipe makes but
    matches no rendered build is an error (the job could not find it).
  * The stages before the main recipe's (pytorch) build only what a later job
    needs: magma for the (platform, CUDA) of the pytorch jobs, not every
    CUDA release recipes/magma/variants.yaml lists.
"""

from __future__ import annotations

from torchwin.errors import Failure, UserError


def compiles(record):
    """The variant calls a compiler: rattler-build records `c_compiler`, `cuda_compiler`... it read."""
    return any(str(key).endswith("_compiler") for key in (record.get("variant") or {}))


def requirements(record):
    """Every requirement of a rendered package: build, host and run."""
    return [*record.get("build_requirements", ()), *record.get("host_requirements", ()), *record.get("depends", ())]


def _spec_name(spec):
    return str(spec).split()[0] if str(spec).split() else ""


def _needs_machine(records, main=()):
    """Recipes that compile, or need a package of one that does."""
    producer = {}
    for record in records:
        producer.setdefault(record["name"], record["recipe"])
    machine = {r["recipe"] for r in records if compiles(r)} | set(main)
    changed = True
    while changed:
        changed = False
        for record in records:
            if record["recipe"] in machine:
                continue
            if any(producer.get(_spec_name(s)) in machine for s in requirements(record)):
                machine.add(record["recipe"])
                changed = True
    return machine


def companion_recipes(records, main=()):
    """Recipes of noarch packages only that need a compiled recipe's package (recipes/pytorch-cpu)."""
    machine = _needs_machine(records, main)
    own = {}
    for record in records:
        own.setdefault(record["recipe"], []).append(record)
    return {recipe for recipe in machine - set(main)
            if all(r["noarch"] and not compiles(r) for r in own.get(recipe, ()))
            and recipe in own}


def compiled_recipes(records, main=()):
    """Recipes that need a build machine of their own: they compile, or need a package of one that
    does, companions aside."""
    return _needs_machine(records, main) - companion_recipes(records, main)


def attach_companions(entries, records_of, companion_records):
    """Give each companion package (a record of companion_recipes) to the first entry whose packages
    satisfy one of its host requirements: `companion_dir` and `companion_variant` say what that job
    builds after its own build ("" and {} for the rest). One job only, though the package is noarch
    and several could: publish refuses two different files of one name (upload.py)."""
    for entry in entries:
        entry["companion_dir"], entry["companion_variant"] = "", {}
    for record in companion_records:
        specs = record.get("host_requirements") or ()
        carrier = next((e for e in entries if any(_spec_name(s) == r["name"] and _matches(s, r)
                                                  for s in specs for r in records_of[e["id"]])), None)
        if carrier is None:
            continue
        if carrier["companion_dir"]:
            raise Failure(f"{carrier['id']}: two companion packages to build after it "
                          f"({carrier['companion_dir']} and {record['recipe']}); one per job")
        carrier["companion_dir"] = record["recipe"]
        carrier["companion_variant"] = {k: v for k, v in (record["variant"] or {}).items() if k != "target_platform"}
        carrier["companion_package"] = f"{record['name']} =={record['version']} {record['build_string']}"


def stages(records, machine):
    """[[recipe, ...], ...]: each compiled recipe one stage after the latest compiled recipe it needs."""
    producer = {}
    for record in records:
        if record["recipe"] in machine:
            producer.setdefault(record["name"], record["recipe"])
    needs = {recipe: set() for recipe in machine}
    for record in records:
        if record["recipe"] in machine:
            for spec in requirements(record):
                dep = producer.get(_spec_name(spec))
                if dep is not None and dep != record["recipe"]:
                    needs[record["recipe"]].add(dep)
    level = {}

    def depth(recipe, path):
        if recipe in path:
            raise Failure("recipes need each other's packages in a cycle: " + " -> ".join([*path, recipe]))
        if recipe not in level:
            level[recipe] = 1 + max((depth(d, (*path, recipe)) for d in needs[recipe]), default=-1)
        return level[recipe]

    for recipe in sorted(machine):
        depth(recipe, ())
    out = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for recipe in sorted(level):
        out[level[recipe]].append(recipe)
    return out


def _matches(spec, record):
    from torchwin import recipes

    try:
        return recipes.spec_matches(spec, record["name"], record["version"], record["build_string"],
                                    record["subdir"], record.get("build_number"))
    except Exception as exc:  # py-rattler raises its own parse errors
        raise Failure(f"{record['recipe']}: cannot read the requirement {spec!r} ({exc})") from None


def _agree(a, b):
    """Two variants agree on every key both have (python, CUDA...), the platform aside."""
    return all(str(a[k]) == str(b[k]) for k in set(a) & set(b) if k != "target_platform")


def link_entries(entries, records_of):
    """Set each entry's `needs` (ids of the entries whose packages it requires), transitively closed."""
    by_name = {}
    for entry in entries:
        for record in records_of[entry["id"]]:
            by_name.setdefault(record["name"], []).append((entry, record))
    direct = {}
    for entry in entries:
        found = set()
        for record in records_of[entry["id"]]:
            for spec in requirements(record):
                candidates = [(e, r) for e, r in by_name.get(_spec_name(spec), ())
                              if e["recipe"] != entry["recipe"] and r["subdir"] in (record["subdir"], "noarch")]
                if not candidates:
                    continue
                matching = [(e, r) for e, r in candidates if _matches(spec, r)]
                if not matching:
                    builds = sorted({f"{r['name']} {r['version']} {r['build_string']}" for _, r in candidates})
                    raise Failure(f"{entry['id']} requires {spec!r}; recipe {candidates[0][0]['recipe']} builds "
                                  f"{', '.join(builds)} for {record['subdir']} but none matches, so the job "
                                  "would not find it (do the two recipes render the same release?)")
                agreeing = [e for e, r in matching if _agree(e["variant"], entry["variant"])]
                found |= {e["id"] for e in (agreeing or [e for e, _ in matching])}
        direct[entry["id"]] = found

    def closure(ident, path=()):
        out = set()
        for dep in direct[ident]:
            if dep in path:
                raise Failure(f"build jobs need each other in a cycle: {' -> '.join([*path, dep])}")
            out |= {dep} | closure(dep, (*path, dep))
        return out

    for entry in entries:
        entry["needs"] = sorted(closure(entry["id"], (entry["id"],)))


def check_job_recipes(job_recipes, order):
    """UserError unless the workflow's build jobs cover every compiled recipe, in an order the stages allow."""
    listed = list(job_recipes)
    missing = [r for names in order for r in names if r not in listed]
    if missing:
        raise UserError(f"--job-recipes {','.join(listed)}: the render has the compiled recipe(s) "
                        f"{', '.join(missing)}, which would be built nowhere; stages: {stage_text(order)}")
    stage_of = {recipe: number for number, names in enumerate(order) for recipe in names}
    present = [r for r in listed if r in stage_of]
    for before, after in zip(present, present[1:]):
        if stage_of[before] > stage_of[after]:
            raise UserError(f"--job-recipes {','.join(listed)}: {before} is listed before {after}, but builds in "
                            f"a later stage (on what {after} builds); stages: {stage_text(order)}")


def stage_text(order):
    """[["magma"], ["pytorch"]] -> "0: magma, 1: pytorch"."""
    return ", ".join(f"{n}: {' '.join(names)}" for n, names in enumerate(order))


def before_main(order, recipes=("pytorch",)):
    """The compiled recipes of the stages before the main recipe's (magma before pytorch)."""
    main = min((n for n, names in enumerate(order) if set(names) & set(recipes)), default=0)
    return [recipe for names in order[:main] for recipe in names]
