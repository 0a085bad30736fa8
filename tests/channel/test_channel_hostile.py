"""Hostile package files and repodata: crafted from real engine-built packages with zipfile/tarfile/zstd.

Each refusal is exit 2, one line naming the file and the member, and the channel
is byte-for-byte unchanged. Also: repodata records that name paths, which no
channel command may follow out of the channel.
"""

import bz2
import io
import json
import tarfile
import zipfile

import pytest
from backports import zstd
from packages import make_package
from rattler_build import ArchiveType
from test_channel import CONFIG, tree_digest
from torchwin.channel import command as channel
from torchwin.channel import store as channel_store
from torchwin.channel.package_check import about_extra, check_package
from torchwin.channel.package_read import INFO_LIMITS, conda_members
from torchwin.cli import main


def cli(*args):
    return main(["channel", *[str(a) for a in args]])


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "channel.yaml"
    path.write_text(CONFIG)
    return path


def tar_members(data):
    """[(TarInfo, bytes or None)] of an uncompressed tar."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return [(m, archive.extractfile(m).read() if m.isfile() else None) for m in archive.getmembers()]


def tar_bytes(members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as archive:
        for info, data in members:
            info = _copy(info)
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _copy(info):
    new = tarfile.TarInfo(info.name)
    for key in ("size", "mode", "type", "linkname", "mtime", "devmajor", "devminor"):
        setattr(new, key, getattr(info, key))
    return new


def member(name, data=None, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info, data


def paths_json(payload):
    """A paths.json that lists exactly these payload files, correctly: only the hostile part differs."""
    import hashlib

    entries = []
    for info, data in payload:
        if info.isfile():
            entries.append({"_path": info.name, "path_type": "hardlink",
                            "sha256": hashlib.sha256(data).hexdigest(), "size_in_bytes": len(data)})
        elif info.issym():
            entries.append({"_path": info.name, "path_type": "softlink"})
    return json.dumps({"paths": entries, "paths_version": 1}).encode()


class Conda:
    """A real .conda, opened up: info and payload members, to change and write back."""

    def __init__(self, path):
        self.path = path
        names = conda_members(path.name)
        with zipfile.ZipFile(path) as archive:
            self.metadata = archive.read(names[0])
            self.info = tar_members(zstd.decompress(archive.read(names[1])))
            self.pkg = tar_members(zstd.decompress(archive.read(names[2])))

    def add_payload(self, *members, listed=True):
        self.pkg += members
        if listed:
            self.set_info("info/paths.json", paths_json(self.pkg))
        return self

    def set_info(self, name, data):
        self.info = [(i, data if i.name == name else d) for i, d in self.info]
        return self

    def write(self, dest, members=None, prefix=b"", suffix=b""):
        names = conda_members(dest.name)
        if members is None:
            members = {names[0]: self.metadata, names[1]: zstd.compress(tar_bytes(self.info)),
                       names[2]: zstd.compress(tar_bytes(self.pkg))}
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(prefix + out.getvalue() + suffix)
        return dest


def _payload_name(conda):
    return next(i.name for i, _ in conda.pkg if i.isfile())


def hostile_condas(tmp_path):
    """{case: (path, words the one error line must hold)}; each path is a .conda named hello-1.0-h0_0.conda."""
    good = make_package(tmp_path / "src", "hello")
    evil = make_package(tmp_path / "evil", "hello", depends=["evil-dependency"])
    dest = lambda case: tmp_path / "bad" / case / good.name  # noqa: E731
    names = conda_members(good.name)
    cases = {}

    with zipfile.ZipFile(good) as archive, zipfile.ZipFile(evil) as other:
        members = {n: archive.read(n) for n in names}
        second_info = dict(members, **{"info-evil-1.0-h0_0.tar.zst": other.read(names[1])})
        cases["two info members"] = (Conda(good).write(dest("two-info"), second_info),
                                     "holds exactly metadata.json, info-hello-1.0-h0_0.tar.zst")
        swapped = {names[0]: members[names[0]], names[1]: members[names[2]], names[2]: members[names[1]]}
        cases["info and pkg swapped"] = (Conda(good).write(dest("swapped"), swapped), "outside info/ in the info part")
    hidden = Conda(good)
    after_end = {names[0]: hidden.metadata, names[1]: zstd.compress(tar_bytes(hidden.info)),
                 names[2]: zstd.compress(tar_bytes(hidden.pkg) + b"a payload no extractor reads")}
    cases["data after the tar end"] = (hidden.write(dest("after-end"), after_end),
                                       "data after the end of the tar archive in pkg-hello-1.0-h0_0.tar.zst")
    cases["data before the zip"] = (Conda(good).write(dest("prefix"), prefix=b"MZ" * 40), "data before the zip")
    cases["data after the zip"] = (Conda(good).write(dest("suffix"), suffix=b"#!/bin/sh\n"), "data after the zip")
    cases["dot-dot member"] = (
        Conda(good).add_payload(member("share/../../etc/evil", b"x")).write(dest("dotdot")),
        "member share/../../etc/evil of pkg-hello-1.0-h0_0.tar.zst: its name has a '..' component")
    cases["absolute member"] = (Conda(good).add_payload(member("/etc/evil", b"x")).write(dest("abs")),
                                "member /etc/evil of pkg-hello-1.0-h0_0.tar.zst: an absolute path")
    cases["symlink out"] = (
        Conda(good).add_payload(member("share/passwd", kind=tarfile.SYMTYPE, linkname="../../etc/passwd"))
        .write(dest("symlink")), "member share/passwd of pkg-hello-1.0-h0_0.tar.zst: a symlink to ../../etc/passwd")
    cases["absolute symlink"] = (
        Conda(good).add_payload(member("share/passwd", kind=tarfile.SYMTYPE, linkname="/etc/passwd"))
        .write(dest("abssymlink")), "a symlink to the absolute path /etc/passwd")
    cases["hard link out"] = (
        Conda(good).add_payload(member("share/shadow", kind=tarfile.LNKTYPE, linkname="/etc/shadow"), listed=False)
        .write(dest("hardlink")), "member share/shadow of pkg-hello-1.0-h0_0.tar.zst: its hard link target is an absolute")
    cases["character device"] = (
        Conda(good).add_payload(member("share/mem", kind=tarfile.CHRTYPE), listed=False).write(dest("chr")),
        "member share/mem of pkg-hello-1.0-h0_0.tar.zst: a device, FIFO")
    cases["fifo"] = (Conda(good).add_payload(member("share/pipe", kind=tarfile.FIFOTYPE), listed=False)
                     .write(dest("fifo")), "member share/pipe of pkg-hello-1.0-h0_0.tar.zst: a device, FIFO")
    cases["non-UTF-8 name"] = (
        Conda(good).add_payload(member(b"share/caf\xe9".decode("utf-8", "surrogateescape"), b"x"), listed=False)
        .write(dest("latin1")), "member share/caf\\xe9 of pkg-hello-1.0-h0_0.tar.zst: its name is not UTF-8")
    index = json.loads(dict((i.name, d) for i, d in Conda(good).info)["info/index.json"])
    index["padding"] = "x" * INFO_LIMITS["info/index.json"]
    cases["huge index.json"] = (Conda(good).set_info("info/index.json", json.dumps(index).encode())
                                .write(dest("huge")), "info/index.json of info-hello-1.0-h0_0.tar.zst: 1048")
    conda = Conda(good)
    name = _payload_name(conda)
    conda.pkg = [(i, b"tampered" if i.name == name else d) for i, d in conda.pkg]
    cases["payload differs from paths.json"] = (conda.write(dest("payload")),
                                                f"member {name} of the payload: sha256")
    cases["file not in paths.json"] = (Conda(good).add_payload(member("bin/extra", b"#!"), listed=False)
                                       .write(dest("unlisted")), "member bin/extra of the payload: not listed")
    cases["listed file missing"] = (
        Conda(good).set_info("info/paths.json", paths_json(Conda(good).pkg + [member("bin/gone", b"1")]))
        .write(dest("missing")), "member bin/gone of info/paths.json: listed, but not in the package")
    cases["info/ in the payload"] = (
        Conda(good).add_payload(member("info/index.json", b"{}"), listed=False).write(dest("infopayload")),
        "member info/index.json of pkg-hello-1.0-h0_0.tar.zst: an info/ file in the payload part")
    cases["a member twice"] = (Conda(good).add_payload(member(name, b"again"), listed=False).write(dest("twice")),
                               f"member {name} of pkg-hello-1.0-h0_0.tar.zst: appears twice")
    return cases


def hostile_tar_bz2(tmp_path):
    good = make_package(tmp_path / "src", "hello", build="h1_0", archive=ArchiveType.TarBz2)
    members = tar_members(bz2.decompress(good.read_bytes()))
    dest = lambda case: tmp_path / "badbz2" / case / good.name  # noqa: E731
    cases = {}

    def write(path, members, suffix=b""):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bz2.compress(tar_bytes(members)) + suffix)
        return path

    cases["dot-dot member"] = (write(dest("dotdot"), members + [member("../evil", b"x")]),
                               f"member ../evil of {good.name}: its name has a '..' component")
    cases["device"] = (write(dest("blk"), members + [member("dev/sda", kind=tarfile.BLKTYPE)]),
                       f"member dev/sda of {good.name}: a device, FIFO")
    cases["data after the stream"] = (write(dest("suffix"), members, suffix=b"junk after the stream"),
                                      "data after the bzip2 stream; refused")
    cases["truncated"] = (_cut(good, dest("cut"), 0.7), "truncated (the bzip2 stream ends before its end marker)")
    return cases


def _cut(src, dest, fraction):
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def test_hostile_packages_are_refused_in_one_line_and_change_nothing(tmp_path, config_file, capsys):
    chan = tmp_path / "chan"
    cfg = ["--channel-dir", chan, "--config", config_file]
    assert cli("add", make_package(tmp_path / "seed", "seed"), *cfg) == 0
    before = tree_digest(chan)
    cases = {**hostile_condas(tmp_path), **{f"bz2 {k}": v for k, v in hostile_tar_bz2(tmp_path).items()}}
    failures = []
    for case, (path, words) in cases.items():
        capsys.readouterr()
        code = cli("add", path, *cfg)
        err = capsys.readouterr().err
        ok = (code == 2 and words in err and str(path) in err and len(err.strip().splitlines()) == 1
              and "Traceback" not in err and tree_digest(chan) == before)
        if not ok:
            failures.append(f"{case}: exit {code}: {err.strip()}")
    assert failures == []


def test_publish_reads_about_json_from_the_info_member_named_after_the_file(tmp_path):
    """The second info-* member must not be what labels/publish read either."""
    good = make_package(tmp_path / "src", "hello", summary="the real one")
    cuckoo = make_package(tmp_path / "evil", "cuckoo")
    names = conda_members(good.name)
    with zipfile.ZipFile(good) as archive, zipfile.ZipFile(cuckoo) as other:
        members = {"info-aaa.tar.zst": other.read("info-cuckoo-1.0-h0_0.tar.zst")}
        members.update({n: archive.read(n) for n in names})
    path = Conda(good).write(tmp_path / "two" / good.name, members)
    assert about_extra(path) == about_extra(good)
    with pytest.raises(Exception, match="holds exactly"):
        check_package(path)


def test_records_naming_paths_never_reach_outside_the_channel(tmp_path, config_file, capsys):
    """A repodata record named ../../../../victim-1.0-h_0.conda: prune, verify and remove leave the victim alone."""
    chan = tmp_path / "chan"
    cfg = ["--channel-dir", chan, "--config", config_file]
    nightly = [make_package(tmp_path / "out", "night", version=f"1.{i}", build="h_0") for i in range(2)]
    assert cli("add", "--label", "nightly", *nightly, *cfg) == 0
    folder = chan / "label" / "nightly" / "linux-64"
    victims = [tmp_path / f"victim-1.{i}-h_0.conda" for i in range(5)]
    repodata = json.loads((folder / "repodata.json").read_text())
    template = next(iter(repodata["packages.conda"].values()))
    for i, victim in enumerate(victims):
        victim.write_bytes(b"precious")
        name = f"../../../../{victim.name}" if i % 2 else str(victim)  # relative, and absolute
        repodata["packages.conda"][name] = dict(template, name="victim", version=f"1.{i}", build="h_0")
    text = json.dumps(repodata)
    (folder / "repodata.json").write_text(text)
    (folder / "repodata.json.zst").write_bytes(zstd.compress(text.encode()))

    capsys.readouterr()
    assert cli("prune", *cfg) == 0
    captured = capsys.readouterr()
    assert "not a plain file name; ignored" in captured.err
    assert "victim" not in captured.out
    assert cli("remove", "--label", "nightly", "victim", *cfg) == 2
    assert "no package in label nightly matches victim" in capsys.readouterr().err
    assert cli("remove", "--label", "nightly", f"../../../../{victims[1].name}", *cfg) == 2
    assert cli("verify", *cfg) == 1
    out = capsys.readouterr().out
    assert out.count("which is not a plain file name; ignored") == len(victims)
    assert all(v.read_bytes() == b"precious" for v in victims)
    # The real packages are untouched too, and verify hashed nothing outside.
    checked, problems = channel.verify(chan)
    assert len(problems) == len(victims)
    assert {p.name for p in folder.iterdir() if p.name.endswith(".conda")} == {p.name for p in nightly}
    assert channel_store.safe_filename(nightly[0].name)


# ---------------------------------------------------------------- --channel-dir and --config mistakes

COMMANDS = [
    ["add", "PKG"],
    ["remove", "hello"],
    ["remove", "--dry-run", "hello"],
    ["prune"],
    ["prune", "--dry-run"],
    ["verify"],
    ["page"],
    ["serve", "--port", "0"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_channel_dir_that_is_a_file_is_one_line_exit_2(command, tmp_path, config_file, capsys):
    pkg = make_package(tmp_path / "out", "hello")
    target = tmp_path / "afile"
    target.write_text("not a channel")
    args = [pkg if a == "PKG" else a for a in command]
    assert cli(*args, "--channel-dir", target, "--config", config_file) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"torchwin: error: {target}: not a folder") and len(err.strip().splitlines()) == 1, err
    assert target.read_text() == "not a channel"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] != "add"], ids=" ".join)
def test_a_mistyped_channel_dir_is_refused_and_nothing_is_created(command, tmp_path, config_file, capsys):
    missing = tmp_path / "chanel"
    assert cli(*command, "--channel-dir", missing, "--config", config_file) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such channel folder" in err and len(err.strip().splitlines()) == 1, err
    assert not missing.exists()


def test_dry_runs_on_a_channel_write_nothing(tmp_path, config_file, capsys):
    """A channel made by another tool (no .torchwin/): dry runs and verify leave it byte for byte, lock file included."""
    chan = tmp_path / "chan"
    assert cli("add", make_package(tmp_path / "out", "hello"), "--channel-dir", chan, "--config", config_file) == 0
    import shutil

    shutil.rmtree(chan / ".torchwin")
    before = tree_digest(chan)
    for command in (["prune", "--dry-run"], ["remove", "--dry-run", "hello"], ["verify"]):
        assert cli(*command, "--channel-dir", chan, "--config", config_file) == 0, command
        assert tree_digest(chan) == before and not (chan / ".torchwin").exists(), command


@pytest.mark.parametrize("command", [["verify"], ["serve", "--port", "0"]], ids=" ".join)
def test_serve_and_verify_refuse_a_missing_config(command, tmp_path, config_file, capsys):
    chan = tmp_path / "chan"
    assert cli("add", make_package(tmp_path / "out", "hello"), "--channel-dir", chan, "--config", config_file) == 0
    capsys.readouterr()
    missing = tmp_path / "chanel.yaml"
    assert cli(*command, "--channel-dir", chan, "--config", missing) == 2
    err = capsys.readouterr().err
    assert f"{missing}: cannot read channel config" in err and len(err.strip().splitlines()) == 1, err
