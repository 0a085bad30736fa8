"""benchmarks/bench_real_build.py --cold-from: a cold build resumed across runs, recorded from their output."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_real_build", ROOT / "benchmarks" / "bench_real_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN1 = """torchwin wheel: PyTorch 1.4.0, py37_cpu_1, Python 3.7
compiling 1.4.0: starting, 0:00:00 elapsed
compiling 1.4.0: 57/2577 compiled (2%), 0:01:28 elapsed
compiling 1.4.0: 2154/2577 compiled (83%), 2:30:49 elapsed
"""
RUN2 = """compiling 1.4.0: 1/420 compiled (0%), 0:00:05 elapsed
compiling 1.4.0: 419/420 compiled (99%), 0:31:10 elapsed
compiling 1.4.0: done in 0:31:40
wheel: /x/torch-1.4.0-cp37-cp37m-linux_x86_64.whl (80.1 MB)
"""


def test_cold_from_runs_sums_each_runs_compile_and_says_it_was_resumed(tmp_path):
    bench = load_bench()
    (tmp_path / "run1.out").write_text(RUN1)
    (tmp_path / "run2.out").write_text(RUN2)
    results = tmp_path / "real_build.json"
    assert bench.main(["1.4.0", "--python", "3.7", "--source", "unused", "--work", str(tmp_path / "w"),
                       "--results", str(results), "--cold-from", str(tmp_path / "run1.out"),
                       str(tmp_path / "run2.out"), "--cold-note", "run 1 beside other jobs"]) == 0
    (entry,) = json.loads(results.read_text())
    assert entry["cold_s"] == 9049 + 1900
    cold = entry["phases"]["cold"]
    assert cold["resumed"] is True and cold["note"] == "run 1 beside other jobs"
    assert [(s["compile_s"], s["finished"], s.get("steps")) for s in cold["segments"]] == [
        (9049, False, "2154/2577"), (1900, True, "419/420")]
    assert not (tmp_path / "w").exists()  # nothing compiled, nothing made


@pytest.mark.parametrize("texts, message", [
    ([RUN1], "the last run did not finish its compile"),
    (["hello\n"], "no `compiling ...` progress line"),
])
def test_cold_from_runs_refuses_what_is_not_a_finished_build(tmp_path, texts, message):
    bench = load_bench()
    paths = []
    for index, text in enumerate(texts):
        paths.append(tmp_path / ("run%d.out" % index))
        paths[-1].write_text(text)
    with pytest.raises(SystemExit, match=message):
        bench.cold_from_runs(paths, "")
