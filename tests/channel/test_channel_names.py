"""Names that alias, builds under two file names, names a shell or a file system reads: issue 25, items 1-4.

Crafted from real engine-built packages; every refusal is exit 2, one line naming the file,
and the channel byte for byte as it was.
"""

import bz2
import html
import json
import shutil
import tarfile

import pytest
from packages import make_package
from rattler_build import ArchiveType
from test_channel import CONFIG, repodata, tree_digest
from test_channel_hostile import Conda, member, tar_bytes, tar_members
from torchwin.channel import page as channel_page
from torchwin.channel.config import load_channel_config
from torchwin.cli import main


def cli(*args):
    return main(["channel", *[str(a) for a in args]])


@pytest.fixture
def cfg(tmp_path):
    config = tmp_path / "channel.yaml"
    config.write_text(CONFIG)
    return ["--channel-dir", tmp_path / "chan", "--config", config]


def refused(capsys, cfg, path, words):
    """add path: exit 2, one line naming path and holding words, the channel unchanged."""
    chan = cfg[1]
    before = tree_digest(chan)
    capsys.readouterr()
    code = cli("add", path, *cfg)
    err = capsys.readouterr().err
    words = (words,) if isinstance(words, str) else words
    ok = (code == 2 and any(w in err for w in words) and str(path) in err and len(err.strip().splitlines()) == 1
          and "Traceback" not in err and tree_digest(chan) == before)
    return None if ok else f"exit {code}: {err.strip()}"


def _index(conda):
    return json.loads(dict((i.name, d) for i, d in conda.info)["info/index.json"])


def _spellings(name):
    """Other spellings of one member name that an extractor writes to the same file."""
    head, _, tail = name.partition("/")
    return [f"./{name}", f"{head}//{tail}", f"{head}/./{tail}", name.replace("/", "\\")]


def test_aliased_member_names_are_refused_in_both_formats(tmp_path, cfg, capsys):
    """A second info/index.json (or payload file) under another spelling never gets past the checks."""
    assert cli("add", make_package(tmp_path / "seed", "seed"), *cfg) == 0
    good = make_package(tmp_path / "src", "hello")
    bz2_good = make_package(tmp_path / "src", "hello", build="h1_0", archive=ArchiveType.TarBz2)
    evil_index = json.dumps(dict(_index(Conda(good)), depends=["evil"])).encode()
    failures = []
    n = 0
    for target, data, part in (("info/index.json", evil_index, "info"), ("info/about.json", b"{}", "info"),
                               ("share/hello.txt", b"other", "pkg")):
        for spelling in _spellings(target):
            n += 1
            conda = Conda(good)
            if part == "info":
                conda.info = conda.info + [member(spelling, data)]
            else:
                conda.pkg = conda.pkg + [member(spelling, data)]
            path = conda.write(tmp_path / f"alias{n}" / good.name)
            failures.append(refused(capsys, cfg, path, "not in canonical form"))
            # The same in a .tar.bz2: one tar holds info/ and the payload.
            members = tar_members(bz2.decompress(bz2_good.read_bytes())) + [member(spelling, data)]
            path = tmp_path / f"alias{n}bz2" / bz2_good.name
            path.parent.mkdir()
            path.write_bytes(bz2.compress(tar_bytes(members)))
            failures.append(refused(capsys, cfg, path, "not in canonical form"))
    # info/ names that are one file on Windows and macOS: case, and Unicode normal form.
    for twin in ("info/Index.json", "info/PATHS.json", "info/inde\u0078.JSON"):
        conda = Conda(good)
        conda.info = conda.info + [member(twin, evil_index)]
        path = conda.write(tmp_path / f"twin-{n}-{len(twin)}" / good.name)
        n += 1
        failures.append(refused(capsys, cfg, path, "the same info/ file as"))
    assert [f for f in failures if f] == []


def test_a_pinned_label_cannot_hide_behind_an_aliased_about_json(tmp_path, cfg, capsys):
    """A .tar.bz2 with a second about.json as ./info/about.json (pinning label nightly), listed in
    paths.json: the label check read info/about.json, an extractor writes the second over it."""
    import hashlib

    good = make_package(tmp_path / "src", "hello", archive=ArchiveType.TarBz2)
    members = tar_members(bz2.decompress(good.read_bytes()))
    pinned = json.dumps({"extra": {"torchwin": {"label": "nightly"}}}).encode()
    paths = json.loads(dict((i.name, d) for i, d in members)["info/paths.json"])
    paths["paths"].append({"_path": "./info/about.json", "path_type": "hardlink",
                           "sha256": hashlib.sha256(pinned).hexdigest(), "size_in_bytes": len(pinned)})
    members = [(i, json.dumps(paths).encode() if i.name == "info/paths.json" else d) for i, d in members]
    path = tmp_path / "pinned" / "linux-64" / good.name
    path.parent.mkdir(parents=True)
    path.write_bytes(bz2.compress(tar_bytes(members + [member("./info/about.json", pinned)])))
    assert refused(capsys, cfg, path, "./info/about.json") is None


def test_a_file_name_must_be_exactly_its_index_and_one_build_is_one_file(tmp_path, cfg, capsys):
    chan = cfg[1]
    good = make_package(tmp_path / "src", "hello", archive=ArchiveType.TarBz2)  # no inner name to betray it
    assert cli("add", good, *cfg) == 0
    # Case variants of one file: one file on Windows and macOS, and a record each before.
    for spelling in ("Hello-1.0-h0_0.tar.bz2", "HELLO-1.0-h0_0.tar.bz2", "hello-1.0-H0_0.tar.bz2"):
        path = tmp_path / f"case-{spelling}" / "linux-64" / spelling
        path.parent.mkdir(parents=True)
        shutil.copy(good, path)
        assert refused(capsys, cfg, path, ("does not match the file name", "its name 'H")) is None
    # The same name-version-build as .conda, other content: refused unless --force, like one file name.
    other = make_package(tmp_path / "other", "hello", content="other")
    assert refused(capsys, cfg, other, f"already has linux-64/{good.name}, the same name-version-build") is None
    assert cli("add", "--force", other, *cfg) == 0
    assert set(repodata(chan)) == {other.name}
    assert sorted(p.name for p in (chan / "linux-64").iterdir() if p.name.startswith("hello")) == [other.name]
    assert cli("verify", *cfg) == 0


BAD_BUILDS = ["h$(touch${IFS}pwned)_0", "h`id`_0", "h0:x_0", "h\\x_0", "h!1_0", "h%PATH%_0", "h'q_0"]


def test_build_strings_a_shell_or_file_system_reads_are_refused_at_add(tmp_path, cfg, capsys):
    """Such a record could never be verified or removed again, and it would land on the page."""
    assert cli("add", make_package(tmp_path / "seed", "seed"), *cfg) == 0
    failures = []
    for i, build in enumerate(BAD_BUILDS):
        path = make_package(tmp_path / f"b{i}", "hello", build=build)
        failures.append(refused(capsys, cfg, path, "file name refused"))
    # A version too (it is part of the file name and of the install command).
    path = make_package(tmp_path / "v", "hello", version="1!1.0")  # an epoch: history expansion in bash
    failures.append(refused(capsys, cfg, path, "file name refused"))
    assert [f for f in failures if f] == []
    assert not (tmp_path / "pwned").exists()


def test_the_page_never_hands_out_a_command_a_shell_expands(tmp_path, cfg, capsys):
    """A record written by another tool, with a build field a shell expands: no copyable command for it."""
    chan = cfg[1]
    assert cli("add", make_package(tmp_path / "out", "pytorch", build="py36_cpu_1"), *cfg) == 0
    path = chan / "linux-64" / "repodata.json"
    data = json.loads(path.read_text())
    record = data["packages.conda"]["pytorch-1.0-py36_cpu_1.conda"]
    for i, build in enumerate(BAD_BUILDS[:2] + ["py36_cpu_$(id)_1"]):
        data["packages.conda"][f"pytorch-1.{i + 1}-py36_cpu_1.conda"] = dict(record, build=build, version=f"1.{i + 1}")
    path.write_text(json.dumps(data))
    (chan / "linux-64" / "repodata.json.zst").unlink()
    config = load_channel_config(cfg[3])
    text = channel_page.render(channel_page.collect(chan), config)
    codes = [html.unescape(c.split("</code>")[0]) for c in text.split("<code>")[1:]]
    assert any('"pytorch=1.0=py36_cpu_*"' in c for c in codes)  # the good one keeps its command
    assert not any(ch in c for c in codes for ch in ("$", "`", "'", "%"))
    assert text.count("no install command") == 3


def test_dependencies_that_do_not_parse_and_a_contradicting_arch_are_refused(tmp_path, cfg, capsys):
    assert cli("add", make_package(tmp_path / "seed", "seed"), *cfg) == 0
    bad = make_package(tmp_path / "dep", "hello", depends=["foo >=>1"])
    assert refused(capsys, cfg, bad, "a dependency 'foo >=>1' that does not parse") is None
    good = make_package(tmp_path / "src", "hello")
    conda = Conda(good).set_info("info/index.json", json.dumps(dict(_index(Conda(good)), arch="arm64")).encode())
    path = conda.write(tmp_path / "arch" / "linux-64" / good.name)
    assert refused(capsys, cfg, path, "arch 'arm64' but subdir linux-64") is None


def test_a_tar_of_many_members_is_refused_at_the_cap_without_reading_on(tmp_path, cfg, capsys, monkeypatch):
    """The caps, shrunk so the test stays small: members counted and sizes summed as they stream past."""
    from torchwin.channel import package_read

    assert cli("add", make_package(tmp_path / "seed", "seed"), *cfg) == 0
    good = make_package(tmp_path / "src", "hello")
    monkeypatch.setattr(package_read, "MAX_MEMBERS", 500)
    folders = [member(f"share/d{i}", kind=tarfile.DIRTYPE) for i in range(2000)]
    path = Conda(good).add_payload(*folders, listed=False).write(tmp_path / "many" / good.name)
    assert refused(capsys, cfg, path, "over 500 members in the package") is None
    monkeypatch.setattr(package_read, "MAX_MEMBERS", 200_000)
    monkeypatch.setattr(package_read, "MAX_TOTAL", 100_000)
    big = Conda(good).add_payload(member("share/big", b"\0" * 200_000)).write(tmp_path / "big" / good.name)
    assert refused(capsys, cfg, big, "over 100000 bytes, the limit") is None


def test_tarfile_keeps_no_list_of_every_member(tmp_path, monkeypatch):
    """Memory stays bounded by the caps: the stream reader's member list is emptied as it goes."""
    from torchwin.channel import package_read
    from torchwin.channel.package_check import check_package

    good = make_package(tmp_path / "src", "hello")
    folders = [member(f"share/d{i}", kind=tarfile.DIRTYPE) for i in range(300)]
    path = Conda(good).add_payload(*folders, listed=False).write(tmp_path / "many" / good.name)
    seen = []
    real = package_read.Contents.add

    def add(self, archive, *args):
        seen.append(len(archive.members))
        return real(self, archive, *args)

    monkeypatch.setattr(package_read.Contents, "add", add)
    check_package(path)
    assert len(seen) > 300 and max(seen) <= 1
