"""benchmarks/run.py runs every step and reports well-formed results; it measures, so no figure is judged here.

The smoke mode builds, packs, indexes and solves the smallest sizes (seconds),
with the real engine, solver and conda-package-handling when installed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"

pytest.importorskip("rattler")
pytest.importorskip("rattler_build")


def run_bench(*args, env=None):
    proc = subprocess.run([sys.executable, str(RUN), "--smoke", "--json", *args], capture_output=True,
                          text=True, cwd=str(ROOT), timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


@pytest.fixture(scope="module")
def smoke():
    return run_bench()


def test_every_section_is_present_and_nothing_failed(smoke):
    report, _ = smoke
    assert {"meta", "render", "packaging", "index", "solve", "memory"} <= set(report)
    assert report["errors"] == []
    assert report["meta"]["mode"] == "smoke"
    assert report["meta"]["machine"]["cpus"] >= 1


def test_table_goes_to_stderr_when_json_takes_stdout(smoke):
    _, stderr = smoke
    for heading in ("1. Render", "2. Packaging", "3. Channel index", "4. Solve", "5. Memory peak"):
        assert heading in stderr


def test_render_covers_the_whole_matrix(smoke):
    from torchwin import recipes

    report, _ = smoke
    expected = recipes.render(recipes.all_recipe_dirs(), ["win-64", "linux-64"])
    assert report["render"]["variants"] == len(expected)
    assert sum(r["variants"] for r in report["render"]["per_recipe"].values()) >= len(expected)
    assert report["render"]["ms_per_variant"] > 0


def test_packaging_rows_describe_real_archives(smoke):
    report, _ = smoke
    section = report["packaging"]
    assert section["payload"]["bytes"] > 0
    measured = [r for r in section["rows"] if "skipped" not in r]
    formats = {(r["tool"], r["format"]) for r in measured}
    assert ("rattler-build", ".conda") in formats
    assert ("rattler-build", ".tar.bz2") in formats
    for row in measured:
        assert 0 < row["size_bytes"] < 2 * section["payload"]["bytes"]
        assert row["ratio"] == pytest.approx(row["size_bytes"] / section["payload"]["bytes"], rel=1e-3)
        assert row["extract_rattler_s"] is not None
    cph = [r for r in section["rows"] if r["tool"] == "conda-package-handling"]
    assert cph, "the conda-package-handling column is always reported, measured or skipped"
    if section["conda_package_handling"].startswith("skipped"):
        assert all("skipped" in r for r in cph)


def test_index_reports_full_index_and_add_one_ratio(smoke):
    report, _ = smoke
    index = report["index"]
    assert index["build"]["packages"] == max(r["packages"] for r in index["rows"]) + index["add_one"]["adds"]
    assert all(r["repodata_bytes"] > 0 for r in index["rows"])
    add = index["add_one"]
    assert add["ratio"] == pytest.approx(add["seconds"] / add["full_index_s"], abs=1e-3)


def test_solve_rows_pick_the_asked_variant(smoke):
    report, _ = smoke
    rows = {r["spec"]: r for r in report["solve"]["rows"]}
    assert set(rows) == {"pytorch cuda90", "pytorch cpuonly"}
    assert "cuda90" in rows["pytorch cuda90"]["pytorch"]
    assert "_cpu_" in rows["pytorch cpuonly"]["pytorch"]


def test_memory_lists_every_step(smoke):
    report, _ = smoke
    steps = [r["step"] for r in report["memory"]["rows"]]
    for prefix in ("baseline", "render", "pack:", "index:", "solve:"):
        assert any(s.startswith(prefix) for s in steps), prefix
    if sys.platform != "win32":
        assert all(r["peak_rss_mb"] > 0 for r in report["memory"]["rows"])


def test_missing_conda_package_handling_is_reported_and_skipped(tmp_path):
    """A stand-in package that fails to import, first on the path: the run goes on and says why."""
    shadow = tmp_path / "conda_package_handling"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('not installed (test stand-in)')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    report, stderr = run_bench("--only", "packaging", env=env)
    section = report["packaging"]
    assert section["conda_package_handling"].startswith("skipped")
    cph = [r for r in section["rows"] if r["tool"] == "conda-package-handling"]
    assert cph and all("skipped" in r for r in cph)
    assert any(r["tool"] == "rattler-build" and "size_bytes" in r for r in section["rows"])
    assert "conda-package-handling" in stderr and "skipped" in stderr


def test_synthetic_payload_is_labelled():
    report, stderr = run_bench("--only", "packaging", "--payload", "synthetic")
    payload = report["packaging"]["payload"]
    assert payload["source"] == "synthetic"
    assert payload["bytes"] > 0
    assert "synthetic" in stderr
