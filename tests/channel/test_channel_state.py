"""A channel in a bad state: a pending change that cannot be finished, a read-only file system,
malformed repodata, and the small mistakes of issue 25 item 14. Real processes where the
console or the file system is what is tested.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from packages import CHANNEL_CONFIG, make_package
from torchwin.cli import main

DEADLINE_S = 120


def cli(*args):
    return main(["channel", *[str(a) for a in args]])


@pytest.fixture
def cfg(tmp_path):
    config = tmp_path / "channel.yaml"
    config.write_text(CHANNEL_CONFIG)
    return ["--channel-dir", tmp_path / "chan", "--config", config]


def run(*args, env=None, prefix=()):
    """`torchwin channel ARGS` as a real process: (exit code, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **(env or {}))
    proc = subprocess.run([*prefix, sys.executable, "-m", "torchwin", "channel", *map(str, args)], env=env,
                          capture_output=True, timeout=DEADLINE_S)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def stuck_channel(tmp_path, cfg):
    """A channel with a journaled add that cannot roll forward: the folder it goes to is a file."""
    chan = cfg[1]
    assert cli("add", make_package(tmp_path / "out", "hello"), *cfg) == 0
    assert cli("add", "--label", "nightly", make_package(tmp_path / "night", "night"), *cfg) == 0
    blocker = chan / "label" / "nightly" / "win-64"
    blocker.write_text("a file where a folder must go")
    stage = chan / ".torchwin" / "staging-stuck"
    (stage / "win-64").mkdir(parents=True)
    journal = {"root": "label/nightly", "stage": stage.name,
               "subdirs": {"win-64": {"add": {"w-1.0-h0_0.conda": {"size": 1}}, "drop": []}}}
    (chan / ".torchwin" / "journal.json").write_text(json.dumps(journal))
    return chan, blocker


def test_a_change_that_cannot_roll_forward_leaves_read_only_commands_working(tmp_path, cfg, readline):
    chan, blocker = stuck_channel(tmp_path, cfg)
    code, out, err = run("verify", *cfg)
    assert code == 1 and "a channel change is pending" in out, (out, err)
    assert "cannot be finished" in err and str(blocker) in err and "Traceback" not in err
    code, out, err = run("page", "--output", tmp_path / "page.html", *cfg)
    assert code == 0 and "a channel change is pending" in err and "Traceback" not in err, err
    assert "hello" in (tmp_path / "page.html").read_text()
    code, out, err = run("remove", "--dry-run", "hello", *cfg)
    assert code == 0 and "would remove main/linux-64/hello-1.0-h0_0.conda" in out, err
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "torchwin", "channel", "serve", "--port", "0", "--quiet", *map(
        str, cfg)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = readline(proc, "`channel serve` on a channel with a pending change")
        assert "serving" in line
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=DEADLINE_S)
    assert "a channel change is pending" in err and "Traceback" not in err
    # Writing commands: one line, the cause and the way out; nothing changed.
    for command in (["remove", "hello"], ["add", make_package(tmp_path / "more", "more")], ["prune"]):
        code, out, err = run(*command, *cfg)
        assert code == 1 and len(err.strip().splitlines()) == 1, (command, err)
        assert str(blocker) in err and "journal.json to abandon it" in err and "Traceback" not in err
    # The way out it names works.
    blocker.unlink()
    code, out, err = run("remove", "hello", *cfg)
    assert code == 0 and "finished an interrupted channel update" in err, err
    code, out, _ = run("verify", *cfg)  # the journal's file was never staged, so no record for it either
    assert code == 0 and "a channel change is pending" not in out


def _can_mount_read_only(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    script = f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && ! touch {probe}/x"
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_read_only_channel_can_be_verified_paged_served_and_dry_run(tmp_path, cfg):
    """A channel on a read-only file system (a mounted archive): a real read-only bind mount, in a
    user and mount namespace of its own (unshare), so no privileges are needed."""
    if os.name == "nt" or shutil.which("unshare") is None or not _can_mount_read_only(tmp_path):
        pytest.skip("needs Linux user namespaces (unshare -rm) for a read-only mount")
    chan = cfg[1]
    assert cli("add", make_package(tmp_path / "out", "hello"), *cfg) == 0
    assert cli("add", "--label", "nightly", make_package(tmp_path / "night", "night"), *cfg) == 0
    ro = ["unshare", "-rm", "sh", "-c", f"mount --bind {chan} {chan} && mount -o remount,bind,ro {chan} && "
          'exec "$@"', "sh"]
    page = tmp_path / "elsewhere" / "index.html"
    for command in (["verify"], ["page", "--output", page], ["remove", "--dry-run", "hello"], ["prune", "--dry-run"]):
        code, out, err = run(*command, *cfg, prefix=ro)
        assert code == 0 and "Traceback" not in err, (command, out, err)
    assert "hello" in page.read_text()
    for command in (["add", make_package(tmp_path / "more", "more")], ["remove", "hello"], ["page"]):
        code, out, err = run(*command, *cfg, prefix=ro)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (command, err)
        assert "Read-only file system" in err


SHAPES = {"an array": [], "null": None, "a string": "packages", "a number": 7,
          "packages as an array": {"packages": []}, "a record that is a number": {"packages": {"x-1-0.tar.bz2": 5}},
          "a record that is null": {"packages.conda": {"x-1-0.conda": None}}}


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_malformed_repodata_is_reported_by_verify_and_one_line_elsewhere(shape, tmp_path, cfg, capsys):
    chan = cfg[1]
    assert cli("add", make_package(tmp_path / "out", "hello"), *cfg) == 0
    assert cli("add", "--label", "nightly", make_package(tmp_path / "night", "night"), *cfg) == 0
    target = chan / "label" / "nightly" / "linux-64" / "repodata.json"
    target.write_text(json.dumps(SHAPES[shape]))
    (target.parent / "repodata.json.zst").unlink()
    capsys.readouterr()
    assert cli("verify", *cfg) == 1
    captured = capsys.readouterr()
    assert f"{target}: malformed repodata" in captured.out, captured
    more = make_package(tmp_path / "more", "more")
    for command in (["add", "--label", "nightly", more], ["prune"], ["prune", "--dry-run"], ["page"],
                    ["remove", "--label", "nightly", "night"]):
        code = cli(*command, *cfg)
        err = capsys.readouterr().err
        assert code == 1 and len(err.strip().splitlines()) == 1 and f"{target}: malformed repodata" in err, (
            command, err)


@pytest.mark.parametrize("platform", ["", "../x", "win64", "linux-64/.."])
def test_an_unknown_platform_is_refused(platform, tmp_path, cfg, capsys):
    assert cli("add", make_package(tmp_path / "out", "hello"), *cfg) == 0
    capsys.readouterr()
    assert cli("remove", "--platform", platform, "hello", *cfg) == 2
    err = capsys.readouterr().err
    assert f"--platform {platform!r}: unknown platform" in err and len(err.strip().splitlines()) == 1
    assert cli("verify", *cfg) == 0  # still there


def test_an_empty_channel_dir_is_refused_and_the_working_folder_left_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pkg = make_package(tmp_path / "out", "hello")
    with pytest.raises(SystemExit) as stop:
        cli("add", pkg, "--channel-dir", "")
    assert stop.value.code == 2
    assert "--channel-dir: an empty folder name" in capsys.readouterr().err
    assert not (tmp_path / ".torchwin").exists() and not (tmp_path / "linux-64").exists()


def test_page_output_that_is_a_folder_is_one_line(tmp_path, cfg, capsys):
    assert cli("add", make_package(tmp_path / "out", "hello"), *cfg) == 0
    capsys.readouterr()
    assert cli("page", "--output", tmp_path, *cfg) == 2
    err = capsys.readouterr().err
    assert f"--output {tmp_path}: a folder" in err and len(err.strip().splitlines()) == 1


def test_a_path_the_console_cannot_encode_is_shown_not_a_crash(tmp_path):
    """A channel folder named in Cyrillic under a cp1252 console (Windows' default): verify still works."""
    config = tmp_path / "channel.yaml"
    config.write_text(CHANNEL_CONFIG)
    chan = tmp_path / "канал"
    assert cli("add", make_package(tmp_path / "out", "hello"), "--channel-dir", chan, "--config", config) == 0
    code, out, err = run("verify", "--channel-dir", chan, "--config", config, env={"PYTHONIOENCODING": "cp1252"})
    assert code == 0 and "ok: 1 package file(s)" in out and "Traceback" not in err, err


def test_the_lock_wait_message_goes_to_stderr(tmp_path, cfg, readline):
    from torchwin.channel.lock import FileLock

    chan = cfg[1]
    assert cli("add", make_package(tmp_path / "out", "hello"), *cfg) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with FileLock(chan / ".torchwin" / "lock"):
        proc = subprocess.Popen([sys.executable, "-m", "torchwin", "channel", "prune", "--dry-run", *map(str, cfg)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            err_line = readline(type("P", (), {"stdout": proc.stderr, "poll": proc.poll})(), "the lock message")
        finally:
            pass
    out, _err = proc.communicate(timeout=DEADLINE_S)
    assert "waiting for the channel lock" in err_line and "waiting" not in out


def test_a_full_disk_is_one_line_and_leaves_a_channel_that_verifies(tmp_path, cfg):
    """The channel on a small tmpfs (in a user and mount namespace of its own): adds fail with ENOSPC."""
    if os.name == "nt" or shutil.which("unshare") is None or not _can_mount_read_only(tmp_path):
        pytest.skip("needs Linux user namespaces (unshare -rm) for a small tmpfs")
    chan = cfg[1]
    chan.mkdir()
    packages = [make_package(tmp_path / "out", f"p{i}", payload=os.urandom(40_000)) for i in range(6)]
    torchwin = shlex.join([sys.executable, "-m", "torchwin", "channel"])
    where = shlex.join(map(str, cfg))
    script = " ; ".join([f"mount -t tmpfs -o size=160k tmpfs {shlex.quote(str(chan))} || exit 9"]
                        + [f"{torchwin} add {shlex.quote(str(p))} {where} ; echo rc=$? >&2" for p in packages]
                        + [f"{torchwin} verify {where} ; echo verify=$? >&2"])
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          timeout=DEADLINE_S * 3, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    err = proc.stderr
    assert "rc=0" in err and "rc=1" in err, err  # some fit, then the disk is full
    assert "No space left on device" in err and "Traceback" not in err, err
    failed = [line for line in err.splitlines() if line.startswith("torchwin: error:")]
    assert all("No space left on device" in line for line in failed), failed
    assert "verify=0" in err, err
