"""Crash safety of channel changes: a real `torchwin channel` process SIGKILLed before each file-system step.

The child counts its own steps (every rename, delete, staged copy and journal
write of channel_store) and kills itself with SIGKILL just before step k, for
every k. Whatever k, the next command of any kind must leave the channel
verified, in the state before or after the killed command, and running the
killed command again must succeed and end in the state after it.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from packages import CHANNEL_CONFIG, make_package
from torchwin.channel import command as channel
from torchwin.channel import store as channel_store
from torchwin.cli import main

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")

CONFIG = CHANNEL_CONFIG

# The child: torchwin's CLI with a kill point before each step channel_store takes on disk.
DRIVER = r"""
import os, shutil, signal, sys
from torchwin.channel import store as channel_store
from torchwin.cli import main

kill_at = int(os.environ["TORCHWIN_TEST_KILL_AT"])
steps = [0]

def step(fn):
    def wrapped(*args, **kwargs):
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapped

for name in ("_replace", "_unlink", "_copy_checked", "_write_atomic"):
    if hasattr(channel_store, name):
        setattr(channel_store, name, step(getattr(channel_store, name)))
shutil.rmtree = step(shutil.rmtree)
code = main(sys.argv[1:])
sys.stderr.write("steps=%d\n" % steps[0])
sys.exit(code)
"""


def cli(*args):
    return main(["channel", *[str(a) for a in args]])


def state(chan):
    """{label/subdir/file: sha256} as repodata.json records it."""
    return {
        f"{label}/{subdir}/{name}": record["sha256"]
        for label, _root, subdir, name, record in channel_store.iter_records(chan)
    }


def assert_verified(chan):
    checked, problems = channel.verify(chan)
    assert problems == []
    assert not (chan / ".torchwin" / "journal.json").exists()
    assert not list((chan / ".torchwin").glob("staging-*"))
    return checked


def run_child(args, kill_at, env):
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, "channel", *[str(a) for a in args]],
        env=dict(env, TORCHWIN_TEST_KILL_AT=str(kill_at)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "channel.yaml"
    path.write_text(CONFIG)
    return path


def _prepare(op, tmp_path, config_file):
    """(base channel, command args) for one operation."""
    base = tmp_path / "base"
    out = tmp_path / "out"
    cfg = ["--channel-dir", base, "--config", config_file]
    if op == "add":
        assert cli("add", make_package(out, "seed"), *cfg) == 0
        new = [make_package(out, "fresh"), make_package(out, "anyarch", subdir="noarch")]
        return base, ["add", *new]
    if op == "add-force":
        first = make_package(out / "one", "same", content="first")
        assert cli("add", first, make_package(out, "other"), *cfg) == 0
        return base, ["add", "--force", make_package(out / "two", "same", content="second")]
    if op == "remove":
        pkgs = [make_package(out, "keep"), make_package(out, "drop"), make_package(out, "drop", build="h1_1")]
        assert cli("add", *pkgs, *cfg) == 0
        return base, ["remove", "drop"]
    assert op == "prune"
    nightly = [make_package(out, "night", version=f"1.{i}", build="h_0") for i in range(5)]
    assert cli("add", "--label", "nightly", *nightly, *cfg) == 0
    return base, ["prune"]


# The next command after a kill: any of them must finish the interrupted change first.
NEXT = [
    ["verify"],
    ["page"],
    ["prune", "--dry-run"],
    ["remove", "--dry-run", "keep-nothing-matches-this"],
    None,  # the killed command itself
]


@pytest.mark.parametrize("op", ["add", "add-force", "remove", "prune"])
def test_a_kill_before_any_step_leaves_a_channel_the_next_command_verifies(op, tmp_path, config_file):
    base, command = _prepare(op, tmp_path, config_file)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    before = state(base)

    # A run that is not killed: how many steps the command takes, and where it ends.
    done = tmp_path / "done"
    shutil.copytree(base, done)
    proc = run_child([*command, "--channel-dir", done, "--config", config_file], 0, env)
    assert proc.returncode == 0, proc.stderr
    total = int(proc.stderr.strip().splitlines()[-1].split("=")[1])
    after = state(done)
    assert after != before and total >= 4
    assert_verified(done)

    outcomes = set()
    for k in range(1, total + 1):
        chan = tmp_path / f"kill{k}"
        shutil.copytree(base, chan)
        cfg = ["--channel-dir", chan, "--config", config_file]
        proc = run_child([*command, *cfg], k, env)
        assert proc.returncode == -signal.SIGKILL, (k, proc.stderr)

        following = NEXT[k % len(NEXT)] or command
        code = cli(*following, *cfg)
        assert code in (0, 2), (k, following)  # 2: the dry-run remove matches nothing, as meant
        assert_verified(chan)
        now = state(chan)
        assert now in (before, after), k
        outcomes.add("after" if now == after else "before")

        code = cli(*command, *cfg)  # the same command again succeeds...
        # (a remove that another command already finished finds nothing left: "no package matches")
        assert code == 0 or (command[0] == "remove" and now == after and code == 2), k
        assert state(chan) == after, k  # ...and ends where an uninterrupted run ends
        assert_verified(chan)
        shutil.rmtree(chan)
    # Kills before the journal is written leave the old channel; later ones are finished forward.
    assert outcomes == {"before", "after"}


def test_force_replacement_never_shows_a_record_that_disagrees_with_its_file(tmp_path, config_file, monkeypatch):
    """After every rename and delete of `add --force`, every record in the live repodata.json and
    repodata.json.zst matches the file under its name (or names none): what a reader can observe."""
    from backports import zstd

    chan = tmp_path / "chan"
    cfg = ["--channel-dir", chan, "--config", config_file]
    one = make_package(tmp_path / "one", "same", content="first")
    two = make_package(tmp_path / "two", "same", content="second, longer")
    assert cli("add", one, *cfg) == 0
    seen = []

    def check():
        folder = chan / "linux-64"
        for name in ("repodata.json", "repodata.json.zst"):
            raw = (folder / name).read_bytes()
            data = json.loads(zstd.decompress(raw) if name.endswith(".zst") else raw)
            for filename, record in channel_store.records_of(data).items():
                path = folder / filename
                assert path.is_file(), f"{name} names {filename}, which is missing"
                assert (path.stat().st_size, _sha(path)) == (record["size"], record["sha256"]), (
                    f"{name}: the record of {filename} disagrees with the file"
                )
                seen.append(record["sha256"])

    for name in ("_replace", "_unlink"):
        real = getattr(channel_store, name)

        def wrapped(*args, _real=real, **kwargs):
            result = _real(*args, **kwargs)
            check()
            return result

        monkeypatch.setattr(channel_store, name, wrapped)
    for pkg in (two, one, two):
        assert cli("add", "--force", pkg, *cfg) == 0
    assert {_sha(one), _sha(two)} <= set(seen)
    assert_verified(chan)


def test_leftovers_of_a_killed_run_with_no_journal_are_cleared_and_change_nothing(tmp_path, config_file):
    chan = tmp_path / "chan"
    cfg = ["--channel-dir", chan, "--config", config_file]
    assert cli("add", make_package(tmp_path / "out", "seed"), *cfg) == 0
    before = state(chan)
    stale = chan / ".torchwin" / "staging-abc123"
    stale.mkdir()
    (stale / "junk.conda").write_bytes(b"half a copy")
    (chan / ".torchwin" / "tmp-repodata.json").write_bytes(b"{")
    assert cli("verify", *cfg) == 0
    assert state(chan) == before
    assert not stale.exists() and not (chan / ".torchwin" / "tmp-repodata.json").exists()


def test_a_journal_naming_paths_outside_the_channel_is_refused(tmp_path, config_file, capsys):
    chan = tmp_path / "chan"
    cfg = ["--channel-dir", chan, "--config", config_file]
    assert cli("add", make_package(tmp_path / "out", "seed"), *cfg) == 0
    victim = tmp_path / "victim-1.0-0.conda"
    victim.write_bytes(b"precious")
    journal = {"root": ".", "stage": "staging-x", "subdirs": {"linux-64": {"add": {}, "drop": ["../../victim-1.0-0.conda"]}}}
    (chan / ".torchwin" / "journal.json").write_text(json.dumps(journal))
    capsys.readouterr()
    assert cli("prune", *cfg) == 1  # a writing command: one line
    err = capsys.readouterr().err
    assert "names paths outside the channel" in err and len(err.strip().splitlines()) == 1
    assert cli("verify", *cfg) == 1  # a reading one says why, and that the change is pending
    captured = capsys.readouterr()
    assert "names paths outside the channel" in captured.err and "a channel change is pending" in captured.out
    assert victim.read_bytes() == b"precious"
