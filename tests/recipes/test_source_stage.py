"""The source stage of recipes/pytorch, through the engine (py-rattler-build 0.73) itself.

What the engine does with a git source, found by building tiny recipes against local repositories:
it fetches the tag, checks `expected_commit`, then runs `git submodule update --init --recursive`
unless the source says `submodules: false`; one unreachable submodule URL fails the whole source
step. The git it runs inherits this process's environment (GIT_CONFIG_COUNT/KEY/VALUE reach it),
while the build script does not see it (HOME is the work folder there).

The recipe's answer to 0.4.1's dead `third_party/nervanagpu`: that release's clone says
`submodules: false` and lists every other submodule as its own git source at the commit the tag
pins, so the engine still clones and checks everything but the dead one. The always-on tests prove
the mechanism and keep the list equal to the tag's; the opt-in test (TORCHWIN_UPSTREAM_REPO) runs
the recipe's own rendered sources for each release through the engine and then the driver's --plan.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import upstream_tree as up
import yaml
from rattler_build import PlatformConfig, RenderConfig, Stage0Recipe, ToolConfiguration, VariantConfig

DEAD_URL = "https://127.0.0.1:9/NervanaSystems/nervanagpu.git"  # nothing listens on port 9: refused at once

# Build scripts that list the work folder are POSIX shell; the engine runs cmd on Windows.
posix_script = pytest.mark.skipif(sys.platform == "win32", reason="the build scripts here are POSIX shell")


def set_git_config(monkeypatch, config):
    """Git settings for every git the engine runs (GIT_CONFIG_COUNT/KEY_n/VALUE_n): the mirror redirects."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", str(len(config)))
    for i, (key, value) in enumerate(config):
        monkeypatch.setenv(f"GIT_CONFIG_KEY_{i}", key)
        monkeypatch.setenv(f"GIT_CONFIG_VALUE_{i}", value)

def git(cwd, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    out = subprocess.run(["git", "-c", "protocol.file.allow=always", *args], cwd=cwd, env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def make_upstream(tmp_path):
    """A superproject with a live submodule pinned at its first commit and one whose URL is dead.

    Returns (superproject URL, its tagged commit, live URL, the live submodule's pinned commit).
    """
    live = tmp_path / "live"
    live.mkdir()
    git(live, "init", "-q")
    (live / "pinned.txt").write_text("pinned\n")
    git(live, "add", ".")
    git(live, "commit", "-qm", "pinned")
    pinned = git(live, "rev-parse", "HEAD")
    (live / "later.txt").write_text("later\n")
    git(live, "add", ".")
    git(live, "commit", "-qm", "later")
    dead = tmp_path / "dead"
    dead.mkdir()
    git(dead, "init", "-q")
    (dead / "x").write_text("x\n")
    git(dead, "add", ".")
    git(dead, "commit", "-qm", "x")
    top = tmp_path / "pytorch"
    top.mkdir()
    git(top, "init", "-q")
    (top / "setup.py").write_text("version = '0.5.0a0'\n")
    git(top, "add", ".")
    git(top, "submodule", "add", "-q", live.as_uri(), "third_party/live")
    git(top / "third_party" / "live", "checkout", "-q", pinned)
    git(top, "submodule", "add", "-q", dead.as_uri(), "third_party/nervanagpu")
    git(top, "config", "-f", ".gitmodules", "submodule.third_party/nervanagpu.url", DEAD_URL)
    git(top, "add", ".")
    git(top, "commit", "-qm", "release")
    git(top, "tag", "v0.4.1")
    return top.as_uri(), git(top, "rev-parse", "HEAD"), live.as_uri(), pinned


def build_recipe_text(text, out):
    """Build a recipe given as YAML text into out; the engine's error text, or None when it built."""
    [variant] = Stage0Recipe.from_yaml(text).render(
        VariantConfig(), RenderConfig(platform=PlatformConfig(target_platform="linux-64")))
    try:
        variant.run_build(tool_config=ToolConfiguration(test_strategy="skip"), output_dir=out, channels=[],
                          no_build_id=True)
    except Exception as exc:  # the engine's errors carry the git output in their text
        return str(exc)
    return None


# The engine looks `git` up once per process, so a build that needs another `git` on PATH runs in a child.
CHILD = """
import os, sys
sys.path[:0] = [sys.argv[3], os.path.dirname(sys.argv[3])]  # this folder, and tests/ for its helpers
from test_source_stage import build_recipe_text
error = build_recipe_text(open(sys.argv[1]).read(), sys.argv[2])
sys.stderr.write(error or "")
sys.stderr.flush()
os._exit(1 if error else 0)  # py-rattler may crash while the interpreter finalizes (see conftest.py)
"""


def engine_build(tmp_path, sources, script, child=False, engine="py-rattler-build"):
    """Build a one-file recipe with these sources (dicts, as the recipe renders them); the engine's error or None.

    engine "conda-build": the real conda-build 26.7.1 (it hands v1 recipes to py-rattler-build).
    """
    recipe = {"schema_version": 1, "package": {"name": "source-stage", "version": "1.0"}, "source": sources,
              "build": {"number": 0, "script": script}}
    text = yaml.safe_dump(recipe, sort_keys=False)
    out = tmp_path / "out"
    if engine == "conda-build":
        from test_build_env import conda_build

        folder = tmp_path / "recipe"
        folder.mkdir()
        (folder / "recipe.yaml").write_text(text)
        channel = tmp_path / "empty-channel"
        for subdir in ("noarch", "linux-64"):
            (channel / subdir).mkdir(parents=True)
            (channel / subdir / "repodata.json").write_text(json.dumps({"info": {"subdir": subdir}, "packages": {}}))
        proc = conda_build(folder, out, channel, check=False)
        return (proc.stdout + proc.stderr) if proc.returncode else None
    if not child:
        return build_recipe_text(text, out)
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out), str(Path(__file__).parent)],
                          capture_output=True, text=True)
    return proc.stderr if proc.returncode else None


def engines():
    from test_build_env import needs_conda

    return ["py-rattler-build", pytest.param("conda-build", marks=[needs_conda, pytest.mark.real_conda])]


def listing_script(listing):
    return [f"(cd \"$SRC_DIR\" && find . -path ./.git -prune -o -type f -print | sort) > {shlex.quote(str(listing))}"]


@pytest.mark.parametrize("engine", engines())
def test_engine_clones_submodules_recursively_and_a_dead_url_fails_the_source_step(engine, tmp_path):
    url, commit, _, _ = make_upstream(tmp_path)
    error = engine_build(tmp_path, [{"git": url, "tag": "v0.4.1", "expected_commit": commit}], ["true"],
                         engine=engine)
    assert error is not None
    assert "submodule update --recursive --init" in error and "third_party/nervanagpu" in error


@posix_script
@pytest.mark.parametrize("engine", engines())
def test_listed_submodules_survive_the_dead_one_and_keep_their_pins(engine, tmp_path):
    url, commit, live_url, pinned = make_upstream(tmp_path)
    listing = tmp_path / "listing.txt"
    sources = [
        {"git": url, "tag": "v0.4.1", "expected_commit": commit, "submodules": False},
        {"git": live_url, "rev": pinned, "target_directory": "third_party/live"},
    ]
    assert engine_build(tmp_path, sources, listing_script(listing), engine=engine) is None
    files = listing.read_text().split()
    # The pinned commit, not the live repository's newest; the dead submodule's folder stays empty.
    assert "./third_party/live/pinned.txt" in files and "./third_party/live/later.txt" not in files
    assert not any(f.startswith("./third_party/nervanagpu/") for f in files)
    assert "./setup.py" in files


def test_engine_fetches_the_tags_whole_history_even_with_depth(tmp_path):
    """`depth:` is accepted but not passed to git: a remote holding only the tag's last commit cannot serve it.

    So the recipe has no `depth:`, and the opt-in test below needs a git that accepts a shallow remote.
    """
    url, commit, _, _ = make_upstream(tmp_path)
    top = Path(url[len("file://"):])
    (top / "setup.py").write_text("version = '0.5.0a1'\n")
    git(top, "commit", "-qam", "after the release")
    git(top, "tag", "v0.4.2")
    shallow = tmp_path / "shallow.git"
    git(tmp_path, "init", "-q", "--bare", str(shallow))
    git(shallow, "fetch", "-q", "--depth", "1", url, "+refs/tags/v0.4.2:refs/tags/v0.4.2")
    error = engine_build(tmp_path, [{"git": shallow.as_uri(), "tag": "v0.4.2", "depth": 1, "submodules": False}],
                         ["true"])
    assert error is not None and "did not send all necessary objects" in error


def test_expected_commit_still_guards_the_release_clone(tmp_path):
    url, commit, _, _ = make_upstream(tmp_path)
    other = "0" * 40
    error = engine_build(tmp_path, [{"git": url, "tag": "v0.4.1", "expected_commit": other,
                                     "submodules": False}], ["true"])
    assert error is not None and other in error and commit in error


@posix_script
def test_local_checkout_without_the_dead_submodule_builds_through_a_path_source(tmp_path):
    """TORCHWIN_SOURCE_DIR: a checkout made as recipes/pytorch/README.md says is copied whole, submodules too."""
    url, _, _, _ = make_upstream(tmp_path)
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", "-b", "v0.4.1", url, str(checkout))
    # The README's command: every submodule but the skipped one.
    git(checkout, "-c", "submodule.third_party/nervanagpu.update=none", "submodule", "update", "--init", "--recursive")
    listing = tmp_path / "listing.txt"
    assert engine_build(tmp_path, [{"path": str(checkout)}], listing_script(listing)) is None
    files = listing.read_text().split()
    assert "./third_party/live/pinned.txt" in files and "./setup.py" in files
    assert not any(f.startswith("./third_party/nervanagpu/") for f in files)


@posix_script
def test_git_config_from_the_environment_reaches_the_engines_submodule_step(tmp_path, monkeypatch):
    """The opt-in test below redirects and skips submodules this way; the build script never sees it."""
    url, commit, _, _ = make_upstream(tmp_path)
    listing = tmp_path / "listing.txt"
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "submodule.third_party/nervanagpu.update")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "none")
    script = listing_script(listing) + [f"echo \"[$GIT_CONFIG_COUNT]\" >> {shlex.quote(str(listing))}"]
    assert engine_build(tmp_path, [{"git": url, "tag": "v0.4.1", "expected_commit": commit}], script) is None
    text = listing.read_text()
    assert "./third_party/live/pinned.txt" in text and "nervanagpu/" not in text
    assert text.rstrip().endswith("[]")


# ---------------------------------------------------------------------------------------------
# The recipe's sources, as rendered, against upstream's facts.


def rendered_sources(platform="linux-64"):
    """{release: [source dicts]} of the pytorch output, one variant per release."""
    from torchwin import recipes

    out = {}
    for variant in recipes.render([up.RECIPE], [platform]):
        if variant.name == "pytorch":
            out.setdefault(str(variant.variant["pytorch_version"]), [s.to_dict() for s in variant.rendered.recipe.sources])
    return out


@pytest.mark.parametrize("platform", ["linux-64", "win-64"])
def test_each_release_clones_its_pinned_commit_and_every_submodule_but_the_skipped(platform):
    sources = rendered_sources(platform)
    assert sorted(sources) == sorted(up.releases_on(platform)) and set(up.releases_on("linux-64")) == set(up.releases())
    for release, (main, *listed) in sources.items():
        facts, skipped = up.facts(release, platform), up.skipped(release)
        if facts["tag"]:
            assert main["git"] == "https://github.com/pytorch/pytorch.git", release
            assert main["rev"] == "refs/tags/" + facts["tag"] and main["expected_commit"] == facts["commit"], release
        else:
            # 0.3 on Windows: the fork's branch, pinned by the commit its table was read from.
            assert platform == "win-64" and main["git"] == facts["repository"] + ".git", release
            assert main["rev"] == main["expected_commit"] == facts["commit"], release
        if not skipped:
            # The engine's own recursive clone: nothing listed, nothing turned off.
            assert main.get("submodules", True) is True and listed == [], release
            continue
        assert main["submodules"] is False, release
        # An entry with no gitlink (0.4.0's vendored third_party/nccl) is no submodule to fetch.
        want = {m["path"]: (m["url"], m["commit"]) for m in facts["submodules"]
                if m["path"] not in skipped and m["commit"]}
        got = {s["target_directory"]: (s["git"], s["rev"]) for s in listed}
        assert got == want, release


def test_every_skipped_submodule_is_one_of_its_release_and_says_why():
    table = json.loads((up.RECIPE / "submodules_skipped.json").read_text())
    assert set(table) <= set(up.releases())
    for release, entries in table.items():
        paths = {m["path"] for m in up.facts(release)["submodules"]}
        for path, why in entries.items():
            assert path in paths, (release, path)
            assert len(why) > 40, (release, path)


# ---------------------------------------------------------------------------------------------
# Opt-in: the recipe's source step for real, then the driver's plan.


def _redirects(repo, release, sources):
    """GIT_CONFIG entries and the changed source list for a local run, and the submodules left as placeholders.

    A submodule whose repository TORCHWIN_SUBMODULE_MIRRORS holds (with the pinned commit) is fetched
    from there through `url.<local>.insteadOf`; any other is not fetched (`update=none`, or its
    listed source dropped) and gets a placeholder after the source step.
    """
    config = [("protocol.file.allow", "always")]
    placeholders = []
    main, *listed = sources
    skipped = up.skipped(release)

    def redirect(url, commit, name, path, depth=0):
        repo = up.submodule_mirror(url, commit)
        if repo is None:
            placeholders.append(path)
            return False
        config.append((f"url.{repo.as_uri()}.insteadOf", url))
        for sub_name, sub_path, sub_url, sub_commit in up.nested_submodules(repo, commit):
            if not redirect(sub_url, sub_commit, sub_name, f"{path}/{sub_path}", depth + 1):
                config.append((f"submodule.{sub_name}.update", "none"))
        return True

    kept = [main]
    if listed:
        for source in listed:
            if redirect(source["git"], source["rev"], source["target_directory"], source["target_directory"]):
                kept.append(source)
    else:
        # git's settings key submodules by name, which is not always the path (third_party/FP16 is
        # "third_party/NNPACK_deps/FP16"): read the names from the tag's .gitmodules.
        for name, path, url, commit in up.nested_submodules(repo, up.facts(release)["commit"]):
            if path in skipped or not redirect(url, commit, name, path):
                config.append((f"submodule.{name}.update", "none"))
    return config, kept, placeholders


@posix_script
@pytest.mark.parametrize("release", up.releases())
def test_engine_source_step_of_the_real_tag_then_the_drivers_plan(release, tmp_path, monkeypatch):
    repo = up.upstream_repo()
    facts = up.facts(release)
    for name in ("TORCHWIN_SOURCE_DIR", "TORCHWIN_NIGHTLY"):
        monkeypatch.delenv(name, raising=False)
    missing = up.missing_blobs(repo, facts["commit"])
    url = Path(repo).resolve().as_uri()
    if not missing and up.history_lacks_objects(repo, facts["commit"]):
        # The engine fetches the tag's whole history, and a blob missing anywhere in it fails that fetch.
        # Then a one-tag shallow repository (a depth-1 fetch needs only the tag's own tree) stands in:
        # the same commit and tree; a `git` in front of PATH adds --update-shallow to the engine's
        # fetches so that it accepts a shallow remote. Everything else is the engine's own step.
        url = up.shallow_tag_repo(repo, facts["tag"], tmp_path / "upstream.git").as_uri()
        monkeypatch.setenv("PATH", f"{up.shallow_fetching_git(tmp_path / 'git-shim')}{os.pathsep}{os.environ['PATH']}")
        print(f"\nv{release}: its history lacks objects in {repo}: cloned from a one-tag shallow copy")
    monkeypatch.setenv("TORCHWIN_GIT_URL", url)
    sources = rendered_sources()[release]
    if missing and len(sources) == 1:
        pytest.skip(f"{repo} lacks {len(missing)} blob(s) of v{release}'s tree ({', '.join(sorted(missing))}), "
                    "so no clone of the tag can be made; point TORCHWIN_UPSTREAM_REPO at a complete clone")
    config, kept, placeholders = _redirects(repo, release, sources)
    if missing:
        # The tag cannot be cloned, but its listed submodule sources still go through the engine: the
        # superproject comes from its tree written out (a path source), so expected_commit is not run.
        tree = tmp_path / "tree"
        up.export_tree(repo, facts["commit"], tree)
        kept[0] = {"path": str(tree)}
        print(f"\nv{release}: {repo} lacks {', '.join(sorted(missing))}: superproject from its tree, not cloned")
    set_git_config(monkeypatch, config)

    # The build script: placeholders into the folders not fetched, then the driver's plan of a CPU build.
    out = tmp_path / "result"
    out.mkdir()
    prefix = tmp_path / "prefix"
    (prefix / "lib" / "python3.6" / "site-packages" / "ninja").mkdir(parents=True)
    (prefix / "lib" / "python3.6" / "site-packages" / "ninja" / "__init__.py").write_text("")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "ninja").write_text("#!/bin/sh\necho 1.8.2\n")
    (tools / "ninja").chmod(0o755)
    q = shlex.quote
    script = [f"mkdir -p \"$SRC_DIR/{p}\" && echo placeholder > \"$SRC_DIR/{p}/{up.PLACEHOLDER}\"" for p in placeholders]
    script += [
        f"(git -C \"$SRC_DIR\" rev-parse HEAD || echo no-git) > {q(str(out / 'head.txt'))}",
        f"env SRC_DIR=\"$SRC_DIR\" PREFIX={q(str(prefix))} RECIPE_DIR={q(str(up.RECIPE))} PATH={q(str(tools))}:/usr/bin:/bin "
        f"TORCHWIN_PYTORCH_VERSION={release} TORCHWIN_BUILD_NUMBER=1 TORCHWIN_CUDA_VERSION=None "
        f"{q(sys.executable)} {q(str(up.RECIPE / 'build_driver.py'))} --plan --json --platform linux-64 "
        f"> {q(str(out / 'plan.json'))} 2> {q(str(out / 'plan.err'))}; echo $? > {q(str(out / 'plan.rc'))}",
    ]
    error = engine_build(tmp_path, kept, script, child=True)
    assert error is None, error[-3000:]
    fetched = sorted(value for key, value in config if key.endswith(".insteadOf"))
    print(f"v{release}: {len(fetched)} submodule repositories fetched by the engine from local copies: "
          f"{', '.join(fetched)}")
    print(f"v{release}: {len(placeholders)} submodule folder(s) filled with placeholders: {', '.join(placeholders)}")
    if not missing:
        assert (out / "head.txt").read_text().strip() == facts["commit"]
    assert (out / "plan.rc").read_text().strip() == "0", (out / "plan.err").read_text()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["release"] == release and plan["commands"][-1][1] == "setup.py"


FORKED = sorted({r for r in up.releases() if up.forked(r, "win-64")})


@posix_script
@pytest.mark.parametrize("release", FORKED)
def test_engine_source_step_of_the_forks_commit_then_the_drivers_plan(release, tmp_path, monkeypatch):
    """0.3 on win-64: the recipe's own source (peterjc123/pytorch by commit, submodules recursive) through
    the engine's source step, from a local clone of the fork (TORCHWIN_FORK_REPO) and of the submodules
    (TORCHWIN_SUBMODULE_MIRRORS, git's url.<local>.insteadOf), then the driver's win-64 plan of that tree."""
    up.upstream_repo()
    fork = up.fork_repo()
    facts = up.facts(release, "win-64")
    for name in ("TORCHWIN_SOURCE_DIR", "TORCHWIN_NIGHTLY"):
        monkeypatch.delenv(name, raising=False)
    (main_source,) = rendered_sources("win-64")[release]
    assert main_source["rev"] == main_source["expected_commit"] == facts["commit"]
    clone_from = fork.resolve()
    if up.history_lacks_objects(fork, facts["commit"]):
        # As for the tags: a depth-1 copy of the branch at the commit, and a git that accepts a shallow remote.
        clone_from = up.shallow_commit_repo(fork, facts["commit"], tmp_path / "fork.git")
        monkeypatch.setenv("PATH", f"{up.shallow_fetching_git(tmp_path / 'git-shim')}{os.pathsep}{os.environ['PATH']}")
        print(f"\nv{release} win-64: the fork's history lacks objects in {fork}: cloned from a one-branch shallow copy")
    config = [("protocol.file.allow", "always"), (f"url.{clone_from.as_uri()}.insteadOf", main_source["git"])]
    placeholders = []

    def redirect(repo, commit, prefix=""):
        for name, path, url, sub_commit in up.nested_submodules(repo, commit):
            mirror = up.submodule_mirror(url, sub_commit)
            if mirror is None:
                config.append((f"submodule.{name}.update", "none"))
                placeholders.append(prefix + path)
                continue
            config.append((f"url.{mirror.as_uri()}.insteadOf", url))
            redirect(mirror, sub_commit, prefix + path + "/")

    redirect(fork, facts["commit"])
    set_git_config(monkeypatch, config)
    out = tmp_path / "result"
    out.mkdir()
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "ninja").write_text("#!/bin/sh\necho 1.8.2\n")
    (tools / "ninja").chmod(0o755)
    q = shlex.quote
    # mkl-devel's Windows import libraries in the host prefix, and the release's patches (its FindMKL's
    # among them), as the recipe gives the driver: the plan checks FindMKL would find MKL there.
    mkl_lib = tmp_path / "prefix" / "Library" / "lib"
    mkl_lib.mkdir(parents=True)
    for name in ("mkl_intel_lp64_dll.lib", "mkl_intel_thread_dll.lib", "mkl_core_dll.lib"):
        (mkl_lib / name).write_text("")
    patches = " ".join(up.release_patches(release))
    script = [f"mkdir -p \"$SRC_DIR/{p}\" && echo placeholder > \"$SRC_DIR/{p}/{up.PLACEHOLDER}\"" for p in placeholders]
    script += [
        f"(git -C \"$SRC_DIR\" rev-parse HEAD || echo no-git) > {q(str(out / 'head.txt'))}",
        f"ls \"$SRC_DIR/torch/lib/nanopb\" > {q(str(out / 'nanopb.txt'))}",
        f"env SRC_DIR=\"$SRC_DIR\" PREFIX={q(str(tmp_path / 'prefix'))} RECIPE_DIR={q(str(up.RECIPE))} "
        f"TORCHWIN_PATCHES={q(patches)} "
        f"PATH={q(str(tools))}:/usr/bin:/bin TORCHWIN_PYTORCH_VERSION={release} TORCHWIN_RELEASE={release} "
        f"TORCHWIN_BUILD_NUMBER=1 TORCHWIN_CUDA_VERSION=None TORCHWIN_SOURCE_COMMIT={facts['commit']} "
        f"{q(sys.executable)} {q(str(up.RECIPE / 'build_driver.py'))} --plan --json --platform win-64 "
        f"> {q(str(out / 'plan.json'))} 2> {q(str(out / 'plan.err'))}; echo $? > {q(str(out / 'plan.rc'))}",
    ]
    error = engine_build(tmp_path, [main_source], script, child=True)
    assert error is None, error[-3000:]
    print(f"\nv{release} win-64: {facts['repository']} at {facts['commit'][:10]} through the engine's source step; "
          f"submodule folders filled with placeholders: {', '.join(placeholders) or 'none'}")
    assert (out / "head.txt").read_text().strip() == facts["commit"]
    assert "pb.h" in (out / "nanopb.txt").read_text().split()  # a real submodule checkout, not a placeholder
    assert (out / "plan.rc").read_text().strip() == "0", (out / "plan.err").read_text()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["env"]["PYTORCH_BUILD_VERSION"] == "%s+%s" % (facts["declared_version"], facts["commit"][:7])
    assert plan["env"]["CMAKE_GENERATOR"] == "Ninja" and plan["env"]["NO_DISTRIBUTED"] == "1"
