"""`torchwin channel add/remove/prune/verify` and channel.yaml: real packages, real indexer, real files."""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import packages
import pytest
from packages import CHANNEL_CONFIG, make_package
from rattler_build import ArchiveType
from torchwin.channel import command as channel
from torchwin.channel import store as channel_store
from torchwin.channel.config import Retention, load_channel_config
from torchwin.channel.lock import FileLock
from torchwin.cli import main
from torchwin.errors import Failure, UserError

CONFIG = CHANNEL_CONFIG


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "channel.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def chan(tmp_path):
    return tmp_path / "chan"


def tree_digest(folder):
    """{relative path: sha256} of every file under folder: 'byte for byte unchanged' made checkable."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def repodata(chan, subdir="linux-64", label="main"):
    root = channel_store.label_root(chan, label)
    return channel_store.records_of(json.loads((root / subdir / "repodata.json").read_text(encoding="utf-8")))


def cli(*args):
    return main(["channel", *[str(a) for a in args]])


# ---------------------------------------------------------------- add


def test_add_indexes_copies_with_0644_and_records_sha256(tmp_path, chan, config_file):
    pkg = make_package(tmp_path / "out")
    assert cli("add", pkg, "--channel-dir", chan, "--config", config_file) == 0
    dest = chan / "linux-64" / pkg.name
    assert dest.read_bytes() == pkg.read_bytes()
    if os.name != "nt":
        assert dest.stat().st_mode & 0o777 == 0o644
    record = repodata(chan)[pkg.name]
    assert record["sha256"] == hashlib.sha256(pkg.read_bytes()).hexdigest()
    assert record["size"] == pkg.stat().st_size
    # noarch exists (conda requires it) and sharded repodata is deliberately absent.
    assert (chan / "noarch" / "repodata.json").is_file()
    assert (chan / "linux-64" / "repodata.json.zst").is_file()
    assert not (chan / "linux-64" / "repodata_shards.msgpack.zst").exists()
    assert not list((chan / ".torchwin").glob("staging-*"))
    assert sorted(p.name for p in chan.iterdir()) == [".torchwin", "linux-64", "noarch"]


def test_add_api_returns_paths_and_labels_go_to_label_folder(tmp_path, chan, config_file):
    config = load_channel_config(config_file)
    a = make_package(tmp_path / "out", "a", build="h0_0")
    b = make_package(tmp_path / "out", "b", subdir="win-64", archive=ArchiveType.TarBz2, build="h1_0")
    paths = channel.add_packages(chan, [a, b], label="nightly", config=config)
    assert paths == [chan / "label/nightly/linux-64" / a.name, chan / "label/nightly/win-64" / b.name]
    assert set(repodata(chan, "win-64", "nightly")) == {b.name}
    assert not (chan / "linux-64").exists()  # main untouched


def test_a_package_whose_recipe_names_a_label_goes_only_there(tmp_path, chan, capsys):
    config_file = tmp_path / "labelled.yaml"
    config_file.write_text(CONFIG.replace("labels: [main, nightly]", "labels: [main, nightly, cuda-runtime]"))
    cudnn = packages.labelled_package(tmp_path / "out", "cuda-runtime")
    other = make_package(tmp_path / "out", "hello")
    assert cli("add", other, cudnn, "--channel-dir", chan, "--config", config_file) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"torchwin: error: {cudnn}: its recipe keeps it in label cuda-runtime "
                           "(extra.torchwin.label), not main; add it with --label cuda-runtime; nothing added")
    assert not chan.exists()
    assert cli("add", cudnn, "--label", "cuda-runtime", "--channel-dir", chan, "--config", config_file) == 0
    assert list(repodata(chan, label="cuda-runtime")) == [cudnn.name]


def test_adding_the_same_file_twice_is_a_no_op(tmp_path, chan, config_file):
    pkg = make_package(tmp_path / "out")
    assert cli("add", pkg, "--channel-dir", chan, "--config", config_file) == 0
    before = tree_digest(chan)
    assert cli("add", pkg, "--channel-dir", chan, "--config", config_file) == 0
    assert tree_digest(chan) == before


def test_same_name_other_content_needs_force(tmp_path, chan, config_file, capsys):
    first = make_package(tmp_path / "one", content="first")
    second = make_package(tmp_path / "two", content="second")
    assert first.name == second.name and first.read_bytes() != second.read_bytes()
    assert cli("add", first, "--channel-dir", chan, "--config", config_file) == 0
    before = tree_digest(chan)
    capsys.readouterr()
    assert cli("add", second, "--channel-dir", chan, "--config", config_file) == 2
    err = capsys.readouterr().err
    assert "with other content" in err and "--force" in err
    assert tree_digest(chan) == before
    assert cli("add", second, "--force", "--channel-dir", chan, "--config", config_file) == 0
    assert repodata(chan)[second.name]["sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()
    assert (chan / "linux-64" / second.name).read_bytes() == second.read_bytes()
    assert cli("verify", "--channel-dir", chan) == 0


def _truncated(src, dest_dir):
    dest_dir.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dest = dest_dir / src.name
    dest.write_bytes(data[: len(data) // 2])
    return dest


def _bad_packages(tmp_path):
    out = tmp_path / "bad"
    good_conda = make_package(tmp_path / "src", "bad", build="h0_0")
    good_bz2 = make_package(tmp_path / "src", "bad", build="h1_0", archive=ArchiveType.TarBz2)
    garbage = out / "garbage" / "junk-1.0-h0_0.conda"
    garbage.parent.mkdir(parents=True)
    garbage.write_text("this is not a zip file\n")
    renamed = out / "renamed" / "other-1.0-h1_0.tar.bz2"  # index.json says 'bad'
    renamed.parent.mkdir(parents=True)
    renamed.write_bytes(good_bz2.read_bytes())
    # conda reads info-<file stem>.tar.zst: a .conda whose members are named otherwise is not installable.
    renamed_conda = out / "renamed" / "other-1.0-h0_0.conda"
    renamed_conda.write_bytes(good_conda.read_bytes())
    wrong_folder = out / "win-64" / good_conda.name  # index.json says linux-64
    wrong_folder.parent.mkdir(parents=True)
    wrong_folder.write_bytes(good_conda.read_bytes())
    not_a_package = out / "notes.txt"
    not_a_package.write_text("hello")
    return {
        "truncated .conda": (_truncated(good_conda, out / "t1"), ": truncated"),
        # Once said "(empty file)": tarfile's words for a stream that stopped early.
        "truncated .tar.bz2": (_truncated(good_bz2, out / "t2"), ": truncated (the bzip2 stream ends"),
        "garbage": (garbage, "data before the zip archive"),
        "name mismatch": (renamed, "does not match the file name"),
        "members not named after the file": (renamed_conda, "a .conda holds exactly metadata.json, "
                                             "info-other-1.0-h0_0.tar.zst and pkg-other-1.0-h0_0.tar.zst"),
        "subdir mismatch": (wrong_folder, "but the file is in a win-64 folder"),
        "not a package": (not_a_package, "not a conda package file name"),
        "missing": (out / "nope-1.0-0.conda", "no such package file"),
    }


def test_bad_packages_are_refused_and_leave_the_channel_byte_for_byte_unchanged(
    tmp_path, chan, config_file, capsys
):
    good = make_package(tmp_path / "out", "good")
    assert cli("add", good, "--channel-dir", chan, "--config", config_file) == 0
    before = tree_digest(chan)
    newcomer = make_package(tmp_path / "out", "newcomer")
    for case, (path, message) in _bad_packages(tmp_path).items():
        capsys.readouterr()
        # The bad file comes after a good one: nothing of the call may land.
        code = cli("add", newcomer, path, "--channel-dir", chan, "--config", config_file)
        err = capsys.readouterr().err
        assert code == 2, case
        assert message in err, (case, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("torchwin: error: "), (case, err)
        assert "Traceback" not in err
        assert tree_digest(chan) == before, case


def test_unknown_label_is_refused(tmp_path, chan, config_file, capsys):
    pkg = make_package(tmp_path / "out")
    assert cli("add", pkg, "--label", "nightlies", "--channel-dir", chan, "--config", config_file) == 2
    err = capsys.readouterr().err
    assert "unknown label 'nightlies'" in err and "main, nightly" in err
    assert not chan.exists()
    with pytest.raises(UserError):
        channel.add_packages(chan, [pkg], label="beta", config=load_channel_config(config_file))


def test_failure_while_staging_leaves_channel_unchanged(tmp_path, chan, config_file, monkeypatch):
    good = make_package(tmp_path / "out", "good")
    assert cli("add", good, "--channel-dir", chan, "--config", config_file) == 0
    before = tree_digest(chan)

    def broken_record(*args, **kwargs):
        raise Failure("disk full")

    monkeypatch.setattr(channel_store, "package_record", broken_record)
    with pytest.raises(Failure, match="disk full"):
        channel.add_packages(
            chan, [make_package(tmp_path / "out", "other")], config=load_channel_config(config_file)
        )
    assert tree_digest(chan) == before
    assert not list((chan / ".torchwin").glob("staging-*"))
    assert not (chan / ".torchwin" / "journal.json").exists()


# ---------------------------------------------------------------- concurrency and readers


def test_concurrent_add_processes_lose_nothing(tmp_path, chan, config_file, readline):
    packages = [make_package(tmp_path / "out", f"pkg{i}", build=f"h{i}_0") for i in range(5)]
    packages.append(make_package(tmp_path / "out", "winpkg", subdir="win-64"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [
        sys.executable,
        "-m",
        "torchwin",
        "channel",
        "add",
        "--channel-dir",
        str(chan),
        "--config",
        str(config_file),
    ]
    procs = []
    try:
        # Hold the lock until every process says it is waiting for it; then they all race for it.
        with FileLock(chan / ".torchwin" / "lock"):
            for p in packages:
                procs.append(subprocess.Popen(
                    [*cmd, str(p)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                ))
            for proc, p in zip(procs, packages):
                # On stderr: stdout stays the command's result, for scripts that read it.
                assert "waiting for the channel lock" in readline(_StderrOf(proc), f"`channel add {p.name}`")
            assert all(proc.poll() is None for proc in procs)
        for proc in procs:
            _out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    names = set(repodata(chan)) | set(repodata(chan, "win-64"))
    assert names == {p.name for p in packages}
    assert cli("verify", "--channel-dir", chan) == 0


class _StderrOf:
    """proc with its stderr as stdout, for the readline fixture."""

    def __init__(self, proc):
        self.proc, self.stdout = proc, proc.stderr

    def poll(self):
        return self.proc.poll()

    @property
    def returncode(self):
        return self.proc.returncode


def live_copy(path):
    """path's bytes, as a reader gets them: on Windows a file cannot be opened while os.replace swaps it
    (PermissionError), so a reader there tries again."""
    while True:
        try:
            return path.read_bytes()
        except PermissionError:
            if os.name != "nt":
                raise


def test_readers_never_see_a_partial_repodata(tmp_path, chan, config_file):
    config = load_channel_config(config_file)
    channel.add_packages(chan, [make_package(tmp_path / "out", "seed")], config=config)
    stop = threading.Event()
    seen, problems = [], []

    def reader():
        path = chan / "linux-64" / "repodata.json"
        try:
            while not stop.is_set():
                raw = live_copy(path)
                try:
                    data = json.loads(raw)
                except ValueError as exc:
                    problems.append(f"unparsable repodata.json: {exc}")
                    continue
                names = channel_store.records_of(data)
                missing = [n for n in names if not (chan / "linux-64" / n).exists()]
                # A removal publishes the new repodata before it deletes files, so a reader holding
                # the old copy may find a file gone; that is only a fault while the old copy is live.
                if missing and live_copy(path) == raw:
                    problems.append(f"live repodata.json names missing files {missing}")
                seen.append(len(names))
        except Exception as exc:  # a reader that dies must fail the test, not stall it
            problems.append(f"the reader failed: {exc!r}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(6):
            channel.add_packages(
                chan, [make_package(tmp_path / "out", f"r{i}", build=f"h{i}_0")], config=config
            )
        # Let the reader see the full channel (seed + 6) before the removal; a loaded machine may lag.
        deadline = time.monotonic() + 60
        while (not seen or max(seen) < 7) and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        victims = channel.find_packages(chan, ["r0", "r1"], "main")
        channel_store.remove_packages(chan, "main", victims)
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert seen and max(seen) == 7


def test_repodata_is_replaced_never_rewritten_in_place(tmp_path, chan, config_file):
    """A hard link to the live repodata keeps the old bytes only if nobody wrote into that file."""
    config = load_channel_config(config_file)
    channel.add_packages(chan, [make_package(tmp_path / "out", "first")], config=config)
    live = [chan / "linux-64" / "repodata.json", chan / "linux-64" / "repodata.json.zst"]
    watches = []
    for i, path in enumerate(live):
        watch = tmp_path / f"watch{i}"
        os.link(path, watch)
        watches.append((watch, watch.read_bytes()))
    channel.add_packages(chan, [make_package(tmp_path / "out", "second")], config=config)
    for (watch, old), path in zip(watches, live):
        assert watch.read_bytes() == old  # the file readers had open was never touched...
        assert path.read_bytes() != old  # ...a new one took its name


# ---------------------------------------------------------------- remove, prune, verify


def test_remove_by_file_name_and_spec(tmp_path, chan, config_file, capsys):
    config = load_channel_config(config_file)
    a1 = make_package(tmp_path / "out", "a", "1.0", build="h0_0")
    a2 = make_package(tmp_path / "out", "a", "2.0", build="h0_0")
    b = make_package(tmp_path / "out", "b", "1.0", build="h0_0")
    channel.add_packages(chan, [a1, a2, b], config=config)
    assert cli("remove", "a <2", "--dry-run", "--channel-dir", chan, "--config", config_file) == 0
    assert "would remove main/linux-64/" + a1.name in capsys.readouterr().out
    assert set(repodata(chan)) == {a1.name, a2.name, b.name}
    assert cli("remove", "a <2", "--channel-dir", chan, "--config", config_file) == 0
    assert set(repodata(chan)) == {a2.name, b.name}
    assert not (chan / "linux-64" / a1.name).exists()
    assert cli("remove", "linux-64/" + b.name, "--channel-dir", chan, "--config", config_file) == 0
    assert set(repodata(chan)) == {a2.name}
    before = tree_digest(chan)
    capsys.readouterr()
    assert cli("remove", "zzz", "--channel-dir", chan, "--config", config_file) == 2
    assert "no package in label main matches zzz" in capsys.readouterr().err
    assert tree_digest(chan) == before
    assert cli("verify", "--channel-dir", chan) == 0


def test_prune_keeps_newest_k_and_young_builds_and_never_main(tmp_path, chan, config_file, capsys):
    config = load_channel_config(config_file)
    now = datetime.now(timezone.utc)
    out = tmp_path / "out"
    nightly = [
        make_package(
            out,
            "pytorch",
            f"1.1.0.dev{(now - timedelta(days=d)):%Y%m%d}",
            build="py36_cpu_1",
            subdir="win-64",
            timestamp=now - timedelta(days=d),
            content=str(d),
        )
        for d in (1, 5, 10, 20, 30)
    ]
    lonely_old = make_package(
        out,
        "pytorch",
        "1.0.0.dev20180101",
        build="py37_cpu_1",
        subdir="win-64",
        timestamp=now - timedelta(days=300),
    )
    channel.add_packages(chan, [*nightly, lonely_old], label="nightly", config=config)
    ancient_main = make_package(
        out, "pytorch", "0.4.1", build="py36_cpu_1", subdir="win-64", timestamp=now - timedelta(days=900)
    )
    channel.add_packages(chan, [ancient_main], config=config)

    before = tree_digest(chan)
    capsys.readouterr()
    assert cli("prune", "--dry-run", "--channel-dir", chan, "--config", config_file) == 0
    printed = capsys.readouterr().out
    assert tree_digest(chan) == before
    going = {p.name for p in nightly[3:]}
    for name in going:
        assert f"would remove nightly/win-64/{name} -- nightly: built" in printed
    assert "the newest 3 pytorch win-64 py36_cpu build(s) stay" in printed
    assert lonely_old.name not in printed and ancient_main.name not in printed

    assert cli("prune", "--channel-dir", chan, "--config", config_file) == 0
    left = set(repodata(chan, "win-64", "nightly"))
    assert left == {p.name for p in nightly[:3]} | {lonely_old.name}
    assert set(repodata(chan, "win-64")) == {ancient_main.name}
    for name in going:
        assert not (chan / "label/nightly/win-64" / name).exists()
    assert cli("verify", "--channel-dir", chan) == 0


def test_a_timestamp_past_year_9999_is_an_unknown_age_not_a_crash(tmp_path, chan, config_file, capsys):
    from torchwin.channel.retention import from_millis

    assert from_millis(1e20) is None and from_millis(float("inf")) is None
    assert from_millis(1554076800000).year == 2019
    old = [make_package(tmp_path / "out", "night", version=f"1.{i}", build="h_0") for i in range(4)]
    assert cli("add", "--label", "nightly", *old, "--channel-dir", chan, "--config", config_file) == 0
    folder = chan / "label" / "nightly" / "linux-64"
    data = json.loads((folder / "repodata.json").read_text())
    for record in data["packages.conda"].values():
        record["timestamp"] = 1e20
    (folder / "repodata.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert cli("prune", "--dry-run", "--channel-dir", chan, "--config", config_file) == 0
    assert capsys.readouterr().out.strip() == "nothing to prune"


def test_retention_plan_groups_by_variant():
    from torchwin.channel.retention import Build, plan, variant_of

    assert variant_of("py36_cuda90_cudnn7_201", 201) == "py36_cuda90_cudnn7"
    assert variant_of("hb0f4dca_0", 0) == "hb0f4dca"
    now = datetime(2019, 5, 1, tzinfo=timezone.utc)
    builds = [
        Build(
            "nightly",
            "win-64",
            f"{b}-{d}",
            "pytorch",
            f"1.1.0.dev201904{d:02d}",
            b,
            1,
            datetime(2019, 4, d, tzinfo=timezone.utc),
        )
        for b in ("py36_cuda90_cudnn7_1", "py36_cpu_1")
        for d in (1, 2)
    ]
    doomed = plan(builds, {"nightly": Retention(keep_days=14, keep_newest=1)}, now=now)
    # Per variant the newest (April 2) stays; April 1 is 30 days old and goes.
    assert sorted(b.filename for b, _ in doomed) == ["py36_cpu_1-1", "py36_cuda90_cudnn7_1-1"]
    assert all("30 days old (> 14)" in reason for _, reason in doomed)
    assert plan(builds, {"nightly": Retention(keep_days=60, keep_newest=1)}, now=now) == []
    assert plan(builds, {"other": Retention(keep_days=0, keep_newest=1)}, now=now) == []


def test_verify_reports_tampered_missing_and_unindexed_files(tmp_path, chan, config_file, capsys):
    config = load_channel_config(config_file)
    a = make_package(tmp_path / "out", "a")
    b = make_package(tmp_path / "out", "b")
    channel.add_packages(chan, [a, b], config=config)
    assert cli("verify", "--channel-dir", chan) == 0
    with open(chan / "linux-64" / a.name, "ab") as stream:
        stream.write(b"\0")
    (chan / "linux-64" / b.name).unlink()
    stray = make_package(tmp_path / "out", "stray")
    (chan / "linux-64" / stray.name).write_bytes(stray.read_bytes())
    capsys.readouterr()
    assert cli("verify", "--channel-dir", chan) == 1
    captured = capsys.readouterr()
    assert f"main/linux-64/{a.name}: size" in captured.out
    assert f"main/linux-64/{a.name}: sha256" in captured.out
    assert f"main/linux-64/{b.name}: in repodata.json but the file is missing" in captured.out
    assert f"main/linux-64/{stray.name}: file is not in repodata.json" in captured.out
    assert "4 problem(s)" in captured.err


def test_default_channel_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHWIN_CHANNEL_DIR", raising=False)
    default = channel.default_channel_dir()
    assert default.parts[-2:] == ("channel", "local")
    assert (default.parent.parent / "pyproject.toml").is_file()
    monkeypatch.setenv("TORCHWIN_CHANNEL_DIR", str(tmp_path / "x"))
    assert channel.default_channel_dir() == tmp_path / "x"


# ---------------------------------------------------------------- channel.yaml


def test_repository_channel_yaml_is_valid():
    config = load_channel_config()
    assert config.name == "torchwin" and config.owner
    assert config.labels[0] == "main" and "nightly" in config.labels
    assert "main" not in config.retention and config.retention["nightly"].keep_newest >= 1


HEAD = "name: torchwin\nanaconda: {owner: x}\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "name: torchwin\nanaconda: {owner: x}\nlabels: [main]\nretension: {}\n",
            "retension is not a known key",
        ),
        ("name: torchwin\nanaconda: {owner: x}\nlabels: [nightly]\n", "labels must include 'main'"),
        (
            HEAD + "labels: [main]\nretention: {main: {keep_days: 1, keep_newest: 1}}\n",
            "retention.main is not allowed",
        ),
        (
            HEAD + "labels: [main, n]\nretention: {n: {keep_days: two, keep_newest: 1}}\n",
            "retention.n.keep_days must be an integer",
        ),
        (
            HEAD + "labels: [main]\nretention: {n: {keep_days: 1, keep_newest: 1}}\n",
            "retention.n names a label that is not in labels",
        ),
        (
            "name: torchwin\nanaconda: {owner: x, api_url: ftp://x}\nlabels: [main]\n",
            "anaconda.api_url must be",
        ),
        ("name: torchwin\nlabels: [main]\n", "anaconda must be a mapping"),
        ("name: [torchwin\n", "is not valid YAML"),
    ],
)
def test_broken_channel_yaml_is_one_clear_line(tmp_path, text, message, capsys):
    path = tmp_path / "channel.yaml"
    path.write_text(text)
    pkg = make_package(tmp_path / "out")
    assert cli("add", pkg, "--channel-dir", tmp_path / "chan", "--config", path) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "chan").exists()


def test_adding_new_names_one_by_one_gives_the_same_repodata_as_a_full_index(tmp_path, chan, config_file):
    """Our records (computed from the checked package, merged) must equal the indexer's, field by field."""
    import asyncio
    import shutil

    from backports import zstd  # noqa: F401  (the same module the merge writes .zst with)
    from rattler.index import index_fs
    from rattler.platform import Subdir

    config = load_channel_config(config_file)
    built = tmp_path / "built"
    files = [make_package(built, name=n, version=v, subdir=s)
             for n, v, s in (("alpha", "1.0", "linux-64"), ("alpha", "1.1", "linux-64"),
                             ("beta", "2.0", "noarch"), ("gamma", "0.1", "win-64"))]
    # Every optional field a record can carry, in both archive formats.
    files.append(make_package(built, name="delta", version="3.0", subdir="linux-64", depends=["alpha >=1"],
                              constrains=["beta <3"], license="BSD-3-Clause", license_family="BSD"))
    files.append(make_package(built, name="eps", version="1.0", subdir="noarch", noarch="generic",
                              archive=ArchiveType.TarBz2, depends=["python"]))
    files.append(packages.labelled_package(built / "labelled", "main"))
    for f in files:
        channel.add_packages(chan, [f], config=config)
    reference = tmp_path / "reference"
    shutil.copytree(chan, reference, ignore=shutil.ignore_patterns("repodata*", ".torchwin"))
    for subdir in ("linux-64", "noarch", "win-64"):
        asyncio.run(index_fs(reference, target_platform=Subdir(subdir), write_zst=True,
                             write_shards=False, force=True))
        ours = json.loads((chan / subdir / "repodata.json").read_text(encoding="utf-8"))
        theirs = json.loads((reference / subdir / "repodata.json").read_text(encoding="utf-8"))
        def comparable(repodata):  # when it was indexed differs, of course; everything else must not
            return {fn: {k: v for k, v in r.items() if k != "indexed_timestamp"}
                    for fn, r in channel_store.records_of(repodata).items()}

        assert comparable(ours) == comparable(theirs), subdir
        assert len(comparable(ours)) == sum(1 for f in files if f.parent.name == subdir)
        assert ours["info"]["subdir"] == subdir
        # The .zst next to it says the same as the .json.
        assert json.loads(zstd.decompress((chan / subdir / "repodata.json.zst").read_bytes())) == ours
    assert main(["channel", "verify", "--channel-dir", str(chan)]) == 0


def test_the_help_examples_name_builds_the_recipe_makes(capsys):
    """Issue 26: `channel --help` added pytorch-1.0.0-py36_cuda90_cudnn7_1, a build string no build has
    (CUDA 9.0's number carries its offset: ..._201)."""
    import re

    from torchwin import recipes

    made = {v.filename_stem for v in recipes.render([recipes.require_repo_root() / "recipes" / "pytorch"],
                                                     ["win-64"])}
    texts = []
    for argv in (["channel", "--help"], ["channel", "remove", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        texts.append(capsys.readouterr().out)
    named = set(re.findall(r"(pytorch-\d[\w.]*-py\d+_\w+?_\d+)\.(?:conda|tar\.bz2)", "\n".join(texts)))
    assert named and named <= made, named - made
