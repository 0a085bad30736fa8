"""Opt-in (marker real_build): upstream's configure step on every release's real tree regenerates the table.

For each release in variants.yaml: the tag's tree with its submodules (tests/real_build.py), the
driver's --plan for linux-64 CPU in the environment the engine gives it, then the tree's own configure
step in that environment (torchwin.upstream.configure: `setup.py build --cmake-only` from 1.2.0, the
era's build_deps/build stopped at the first build before). What CMake decided must match the committed
row of recipes/pytorch/configure_linux64_cpu.json; TORCHWIN_UPDATE_CONFIGURE_TABLE=1 writes the row
instead (and README's rendering must then be refreshed: tests/upstream/test_configure.py says so).

    TORCHWIN_UPSTREAM_REPO=... TORCHWIN_SUBMODULE_MIRRORS=... TORCHWIN_REAL_CC=gcc-9 TORCHWIN_REAL_CXX=g++-9 \
    TORCHWIN_REAL_PREFIXES=/p/py36:/p/py37 pytest -m real_build tests/recipes/test_configure_table.py
"""

import json
import os
import re
import shutil

import pytest
import real_build
import upstream_tree as up
from torchwin.upstream import configure

pytestmark = pytest.mark.real_build

TABLE = up.ROOT / configure.TABLE
# What a regenerated row must reproduce; the rest (python patch level, compiler) is recorded, not compared.
COMPARED_FIELDS = ("configure", "completed", "plan", "observed", "disagreements", "summary_scope", "unreported",
                   "missing_blobs", "no_mirror")


def entry_for(release, tree, report, plan, python_version, mkl_in_host, result):
    promised = configure.promises(plan["env"], mkl_in_host)
    found = configure.observed(result["summary"], result["cache"], result["messages"])
    summary = result["summary"]
    return {
        "commit": up.facts(release)["commit"],
        "python": python_version,
        "compiler": " ".join(filter(None, [summary.get("C++ compiler id") or "GNU",
                                           summary.get("C++ compiler version")
                                           or result["cache"].get("CMAKE_CXX_COMPILER_VERSION")])),
        "cmake": summary.get("CMake version"),
        "configure": {"args": result["configure"]["args"], "why": result["configure"]["why"]},
        "completed": result["completed"],
        "error": None if result["completed"] else last_error(result["log"]),
        "mkl_in_host": mkl_in_host,
        "plan": promised,
        "observed": found,
        "disagreements": configure.compare(promised, found),
        "summary_scope": configure.summary_scope(summary),
        "unreported": configure.unreported(promised, found),
        "missing_blobs": sorted(report["missing_blobs"]),
        "no_mirror": report["no_mirror"],
    }


def last_error(log):
    """The first CMake error (or the last line) of a configure log, for the table."""
    text = open(log, encoding="utf-8", errors="replace").read()
    match = re.search(r"^CMake Error.*(?:\n  .*)*", text, re.MULTILINE)
    if match:
        return " ".join(match.group(0).split())[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def write_row(release, row):
    table = json.loads(TABLE.read_text()) if TABLE.is_file() else {}
    table.setdefault("releases", {})[release] = row
    tmp = TABLE.with_suffix(".json.tmp")
    tmp.write_text(configure.render_json(table))
    os.replace(tmp, TABLE)


@pytest.mark.skipif(not shutil.which("cmake"), reason="needs cmake on PATH (the recipe's build requirement)")
@pytest.mark.parametrize("release", up.releases_on("linux-64"))
def test_configure_of_the_real_tree_matches_the_committed_table(release, tmp_path_factory):
    compilers = real_build.toolchain()
    prefix, python_version = real_build.host_prefix(release)
    tree, report = real_build.source_tree(release, real_build.trees_root(tmp_path_factory))
    env = real_build.driver_env(release, tree, prefix, compilers)
    # cmake itself is the recipe's build requirement; here the machine's.
    env["PATH"] += os.pathsep + os.path.dirname(shutil.which("cmake"))
    plan = real_build.driver_plan(env)
    env.update(plan["env"])
    for build in (tree / "build", tree / "torch" / "lib" / "build", tree / "torch" / "lib" / "tmp_install"):
        if build.exists():
            shutil.rmtree(build)  # a fresh configure, not a cached one
    result = configure.run_configure(tree, env, env["PYTHON"], tree.parent / "configure")
    row = entry_for(release, tree, report, plan, python_version, real_build.mkl_in(prefix), result)
    print(f"\n{release}: {' '.join(row['configure']['args'])}: completed={row['completed']} "
          f"observed={ {k: v['value'] for k, v in row['observed'].items()} } "
          f"disagreements={row['disagreements'] or 'none'}")
    if os.environ.get("TORCHWIN_UPDATE_CONFIGURE_TABLE") == "1":
        write_row(release, row)
    assert row["completed"], f"{release}: the configure did not complete: {row['error']} (log: {result['log']})"
    committed = json.loads(TABLE.read_text())["releases"].get(release)
    assert committed is not None, f"{release}: no row in {TABLE}; rerun with TORCHWIN_UPDATE_CONFIGURE_TABLE=1"
    assert {k: row[k] for k in COMPARED_FIELDS} == {k: committed[k] for k in COMPARED_FIELDS}
