"""Fuzzing the channel: random truncations, corruptions and member swaps of real packages, other
spellings of member names, random file names, random repodata records and shapes, and real
`torchwin channel` processes SIGKILLed at random moments.

Sized for CI (a few seconds). TORCHWIN_FUZZ_SCALE=N runs N times as many cases
(TORCHWIN_FUZZ_SCALE=50: about a minute); TORCHWIN_FUZZ_SEED picks another
random sequence. A failure message names the seed and case, so it can be replayed.
"""

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest
from backports import zstd
from packages import make_package
from rattler_build import ArchiveType
from torchwin.channel import command as channel
from torchwin.channel import store as channel_store
from torchwin.channel.package_check import check_package
from torchwin.channel.package_read import conda_members
from torchwin.cli import main
from torchwin.errors import UserError

SCALE = int(os.environ.get("TORCHWIN_FUZZ_SCALE", "1"))
SEED = int(os.environ.get("TORCHWIN_FUZZ_SEED", "14"))

CONFIG = """\
name: torchwin
anaconda:
  owner: torchwin
labels: [main]
"""


@pytest.fixture
def rng():
    return random.Random(SEED)


@pytest.fixture
def built(tmp_path):
    payload = bytes(random.Random(SEED).randrange(256) for _ in range(20000))  # incompressible: many blocks
    return {
        "conda": make_package(tmp_path / "src", "fuzz", payload=payload),
        "bz2": make_package(tmp_path / "src", "fuzz", build="h1_0", payload=payload, archive=ArchiveType.TarBz2),
    }


def _conda_contents(path):
    """The decompressed members of a .conda, or None when they cannot be read."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {n: zstd.decompress(archive.read(n)) if n.endswith(".zst") else archive.read(n)
                    for n in conda_members(path.name)}
    except Exception:  # noqa: BLE001  (any failure to read means: not the same package)
        return None


def _expect_refused(path, case):
    try:
        check_package(path)
    except UserError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc), case
        return
    pytest.fail(f"{case}: accepted (TORCHWIN_FUZZ_SEED={SEED})")


def test_every_truncation_is_refused(built, tmp_path, rng):
    for kind, good in built.items():
        data = good.read_bytes()
        for i in range(15 * SCALE):
            cut = rng.randrange(len(data))
            path = tmp_path / f"cut-{kind}-{i}" / good.name
            path.parent.mkdir()
            path.write_bytes(data[:cut])
            _expect_refused(path, f"{kind} cut at {cut} of {len(data)}")


def test_corruptions_are_refused_unless_they_change_no_content(built, tmp_path, rng):
    """A flipped byte anywhere, or a flipped byte inside the compressed payload whose zip CRC is then
    recomputed: refused, unless the payload reads back identical (a flip in a zip timestamp, or in an
    info/ file's text: conda formats keep no checksum of info/, so a flip there that leaves valid JSON
    naming the same package is a different build, not damage anyone can see)."""
    good = built["conda"]
    original = _conda_contents(good)
    data = good.read_bytes()
    names = conda_members(good.name)
    with zipfile.ZipFile(good) as archive:
        members = {n: archive.read(n) for n in names}
    for i in range(20 * SCALE):
        path = tmp_path / f"flip-{i}" / good.name
        path.parent.mkdir()
        if i % 2:
            at = rng.randrange(len(data))
            path.write_bytes(data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:])
            case = f"byte {at} flipped"
        else:
            name = names[2]
            blob = bytearray(members[name])
            at = rng.randrange(len(blob))
            blob[at] ^= 1 << rng.randrange(8)
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w") as archive:  # a fresh zip: the CRCs fit the damaged bytes
                for n in names:
                    archive.writestr(n, bytes(blob) if n == name else members[n])
            path.write_bytes(out.getvalue())
            case = f"{name} byte {at} flipped, CRC recomputed"
        try:
            check_package(path)
        except UserError:
            continue
        contents = _conda_contents(path)
        assert contents and contents[names[2]] == original[names[2]], f"{case}: accepted another payload ({SEED})"


def test_member_swaps_are_refused(built, tmp_path, rng):
    good = built["conda"]
    other = make_package(tmp_path / "other", "fuzz", content="other")  # same name, other payload
    names = conda_members(good.name)
    with zipfile.ZipFile(good) as a, zipfile.ZipFile(other) as b:
        mine = {n: a.read(n) for n in names}
        theirs = {n: b.read(n) for n in names}
    for i in range(10 * SCALE):
        members = dict(mine)
        how = rng.choice(["swap", "mix", "extra", "drop", "rename"])
        if how == "swap":
            x, y = rng.sample(names, 2)
            members[x], members[y] = mine[y], mine[x]
        elif how == "mix":  # info of one package, payload of another
            name = rng.choice(names[1:])
            members[name] = theirs[name]
        elif how == "extra":
            members[f"info-{rng.randrange(99)}.tar.zst"] = theirs[names[1]]
        elif how == "drop":
            del members[rng.choice(names)]
        else:
            name = rng.choice(names)
            members[name.replace("fuzz", "fuzy")] = members.pop(name)
        if members == mine:
            continue
        path = tmp_path / f"swap-{i}" / good.name
        path.parent.mkdir()
        order = list(members)
        rng.shuffle(order)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for n in order:
                archive.writestr(n, members[n])
        path.write_bytes(out.getvalue())
        if how == "mix" and members[names[1]] == theirs[names[1]] and members[names[2]] == theirs[names[2]]:
            continue  # both parts of the other package: a consistent package, not a swap
        _expect_refused(path, f"{how} (case {i})")


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_processes_killed_at_random_moments_leave_a_channel_the_next_command_verifies(tmp_path, rng):
    config = tmp_path / "channel.yaml"
    config.write_text(CONFIG)
    chan = tmp_path / "chan"
    one = make_package(tmp_path / "one", "same", content="first")
    two = make_package(tmp_path / "two", "same", content="second")
    news = [make_package(tmp_path / "new", f"new{i}") for i in range(4)]
    cfg = ["--channel-dir", str(chan), "--config", str(config)]
    assert main(["channel", "add", str(one), *map(str, news[:2]), *cfg]) == 0
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    commands = [
        ["add", "--force", str(two)], ["add", "--force", str(one)],
        ["add", *map(str, news[2:])], ["remove", "new2", "new3"],
        ["remove", "new0"], ["add", str(news[0])],
    ]

    def launch(command):
        return subprocess.Popen([sys.executable, "-m", "torchwin", "channel", *command, *cfg], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    started = time.monotonic()
    assert launch(["verify"]).wait(timeout=120) == 0
    span = time.monotonic() - started  # about how long one command lives
    killed = 0
    for i in range(8 * SCALE):
        command = commands[i % len(commands)]
        before = {n: r["sha256"] for *_x, n, r in channel_store.iter_records(chan)}
        proc = launch(command)
        time.sleep(rng.uniform(0, 1.5 * span))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait(timeout=120) == -signal.SIGKILL
        assert main(["channel", "verify", *cfg]) == 0, f"kill {i} during {command} (seed {SEED})"
        after = {n: r["sha256"] for *_x, n, r in channel_store.iter_records(chan)}
        if after != before:  # it got far enough to change the channel: then all of it is there
            _finish = main(["channel", *command, *cfg])
            assert _finish in (0, 2)
            assert {n: r["sha256"] for *_x, n, r in channel_store.iter_records(chan)} == after, command
    assert channel.verify(chan)[1] == []
    assert killed >= 1  # at least one was caught in the act
    shutil.rmtree(chan)


# ---------------------------------------------------------------- names, record fields, repodata shapes


def _respell(name, rng):
    """Another spelling of a member name that an extractor writes to the same file (or, for info/, the
    same file on a case-insensitive file system)."""
    head, _, tail = name.partition("/")
    forms = [f"./{name}", f"{head}//{tail}", f"{head}/./{tail}", f"{head}\\{tail}", f"{name}/.",
             f"{head}/{tail}/", f"x/../{name}"]
    if head == "info":
        forms.append(name.upper() if rng.random() < 0.5 else f"{head}/{tail[0].upper()}{tail[1:]}")
    return rng.choice([f for f in forms if f])


def test_every_other_spelling_of_a_member_name_is_refused(built, tmp_path, rng):
    from test_channel_hostile import Conda, member

    good = built["conda"]
    conda = Conda(good)
    names = [i.name for i, _ in conda.info + conda.pkg if i.isfile()]
    for i in range(12 * SCALE):
        target = rng.choice(names)
        spelling = _respell(target, rng)
        copy = Conda(good)
        extra = member(spelling, b"other bytes")
        if target.startswith("info/"):
            copy.info = copy.info + [extra]
        else:
            copy.add_payload(extra)  # listed in paths.json too: only the name can give it away
        path = copy.write(tmp_path / f"name-{i}" / good.name)
        _expect_refused(path, f"{target} spelled {spelling!r} (case {i})")


def _random_value(rng, depth=0):
    kinds = ["int", "str", "none", "bool", "float", "huge", "list", "dict", "shell"]
    kind = rng.choice(kinds if depth < 2 else kinds[:6])
    if kind == "int":
        return rng.randrange(-5, 10**6)
    if kind == "str":
        return "".join(rng.choice("abc019_.-+ =<>*/\\:") for _ in range(rng.randrange(0, 12)))
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "float":
        return rng.uniform(-1e20, 1e20)
    if kind == "huge":
        return 10 ** rng.randrange(18, 40)
    if kind == "shell":
        return rng.choice(["$(id)", "`id`", "%PATH%", "!!", "a'b", 'a"b'])
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))]
    return {str(rng.randrange(9)): _random_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}


FIELDS = ["name", "version", "build", "build_number", "size", "sha256", "md5", "depends", "constrains",
          "timestamp", "subdir", "track_features", "noarch", "license"]
NAMES = ["ok-1.0-h0_0.conda", "ok-1.0-h0_0.tar.bz2", "../x-1-0.conda", "a\\b-1-0.conda", "C:x-1-0.conda",
         "x-1-$(id).conda", "x.conda", "", "-.conda", "x-1-0.CONDA", "\u00e9-1-0.conda", "x-1-0.conda/"]


def _random_repodata(rng, template):
    shape = rng.randrange(6)
    if shape == 0:  # not an object at all
        return rng.choice([[], None, "packages", 3, True, [template]])
    if shape == 1:  # a section that is not an object
        return {"packages": rng.choice([[], None, "x", 5, [template]]), "packages.conda": {}}
    records = {}
    for _ in range(rng.randrange(1, 4)):
        record = dict(template)
        for field in rng.sample(FIELDS, rng.randrange(1, 5)):
            if rng.random() < 0.2:
                record.pop(field, None)
            else:
                record[field] = _random_value(rng)
        if shape == 2 and rng.random() < 0.5:
            record = _random_value(rng)  # a record that may not be an object
        records[rng.choice(NAMES + [f"r{rng.randrange(99)}-1.0-h0_0.conda"])] = record
    section = "packages.conda" if rng.random() < 0.5 else "packages"
    return {"info": {"subdir": "linux-64"}, section: records, "repodata_version": _random_value(rng)}


def test_random_repodata_never_crashes_a_command_nor_reaches_outside(tmp_path, rng, capsys):
    """Records and repodata another tool (or an attacker) wrote: every command gives its answer or one line."""
    config = tmp_path / "channel.yaml"
    config.write_text(CONFIG.replace("labels: [main]", "labels: [main, nightly]\nretention:\n  nightly: "
                                     "{keep_days: 1, keep_newest: 1}"))
    chan = tmp_path / "chan"
    cfg = ["--channel-dir", str(chan), "--config", str(config)]
    pkg = make_package(tmp_path / "src", "ok")
    assert main(["channel", "add", "--label", "nightly", str(pkg), *cfg]) == 0
    folder = chan / "label" / "nightly" / "linux-64"
    template = next(iter(channel_store.read_repodata(folder.parent, "linux-64")["packages.conda"].values()))
    outside = tmp_path / "x-1-0.conda"
    outside.write_bytes(b"precious")
    commands = [["verify"], ["page", "--output", str(tmp_path / "p.html")], ["prune", "--dry-run"], ["prune"],
                ["remove", "--dry-run", "--label", "nightly", "ok"], ["remove", "--label", "nightly", "r1"]]
    for i in range(12 * SCALE):
        data = _random_repodata(rng, template)
        (folder / "repodata.json").write_text(json.dumps(data))
        (folder / "repodata.json.zst").unlink(missing_ok=True)
        for command in commands:
            capsys.readouterr()
            code = main(["channel", *command, *cfg])
            err = capsys.readouterr().err
            assert code in (0, 1, 2) and "Traceback" not in err, (i, command, data, err)
            if code:
                assert err.strip().splitlines()[-1].startswith("torchwin: error: "), (i, command, err)
        assert outside.read_bytes() == b"precious"
        shutil.copy(pkg, folder / pkg.name)  # a prune or remove may have taken it; the next case needs it


def test_random_file_names_follow_one_rule_at_add_and_verify(tmp_path, rng, capsys):
    """A good package copied to random names: add takes exactly the names the shared rule allows
    (and whose parts are the package's own), and verify then passes."""
    from torchwin.channel.package_check import file_name_problem

    config = tmp_path / "channel.yaml"
    config.write_text(CONFIG)
    chan = tmp_path / "chan"
    cfg = ["--channel-dir", str(chan), "--config", str(config)]
    pkg = make_package(tmp_path / "src", "ok", archive=ArchiveType.TarBz2)  # a .tar.bz2 holds no name inside
    alphabet = "ok1.0h_-+$`!%:\\'\" OK\u00e9"
    for i in range(20 * SCALE):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 16))) + ".tar.bz2"
        if rng.random() < 0.3:
            name = pkg.name
        if "/" in name or "\x00" in name:
            continue
        path = tmp_path / f"n{i}" / "linux-64" / name
        path.parent.mkdir(parents=True)
        shutil.copy(pkg, path)
        capsys.readouterr()
        code = main(["channel", "add", str(path), *cfg])
        err = capsys.readouterr().err
        if code == 0:
            assert name == pkg.name and file_name_problem(name) is None, (name, err)
        else:
            assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
    assert main(["channel", "verify", *cfg]) == 0
