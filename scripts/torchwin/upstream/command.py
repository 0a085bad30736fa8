"""`torchwin upstream-facts`: read upstream PyTorch's own files at each pinned release commit.

The recipe and its build driver depend on facts about each upstream release:
the version its setup.py declares, the environment variables its build reads,
its submodules, its CMake floors, its bare `yaml.load` calls, how it finds
NvToolsExt and when it uses ninja. This module reads them from an upstream git
repository (bare or not; git plumbing only, so blobs missing from a mirror are
recorded, not fatal) at the commits `recipes/pytorch/variants.yaml` pins, and
writes one committed table per release, `recipes/pytorch/upstream/<release>.json`.
`--check` regenerates the tables in memory and reports every difference (drift).

The facts are read with patterns, not by running upstream's code; each finding
names the file (and line) it came from, so a reader can check it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from torchwin.checkout import require_repo_root
from torchwin.errors import Failure, UserError
from torchwin.upstream.table import (
    UPSTREAM_URL,
    check,
    extract,
    fork_source,
    pins,
    render,
    stray_tables,
    write_atomic,
)
from torchwin.upstream.tree import Git


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "upstream-facts", help="read upstream PyTorch at each pinned release; write or check the facts table",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  torchwin upstream-facts --repo ~/src/pytorch --submodule-mirrors ~/mirrors\n"
        "  torchwin upstream-facts --repo ~/src/pytorch --check\n"
        "  torchwin upstream-facts --repo ~/src/pytorch --ref v1.2.0   # any ref, printed, not written\n")
    parser.add_argument("--repo", required=True, metavar="PATH", action="append",
                        help="a PyTorch git repository (bare or not) holding pinned commits; repeat it for a "
                        "fork (0.3's Windows builds: peterjc123/pytorch): each commit is read from the first "
                        "--repo holding it")
    parser.add_argument("--release", action="append", metavar="X.Y.Z",
                        help="only this release of variants.yaml (repeatable; default: all)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where the tables live (default: recipes/pytorch/upstream of the checkout)")
    parser.add_argument("--variants", type=Path, metavar="FILE",
                        help="the release list (default: recipes/pytorch/variants.yaml of the checkout)")
    parser.add_argument("--submodule-mirrors", metavar="DIR",
                        help="folder of submodule repositories named OWNER+NAME (or OWNER+NAME/repo) "
                        "after their GitHub URL, to read their CMake floors")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing every difference from the committed tables")
    parser.add_argument("--ref", metavar="REF",
                        help="print the facts of any commit or tag as JSON instead (not written)")
    parser.set_defaults(func=run)


def run(args):
    gits = []
    for path in args.repo:
        git = Git(path)
        if not Path(path).is_dir() or not git.is_repository():
            raise UserError("--repo %s: not a git repository" % path)
        gits.append(git)
    if args.ref:
        for git in gits:
            proc = git.run("rev-parse", "--verify", "-q", "%s^{commit}" % args.ref, check=False)
            if proc.returncode == 0:
                break
        else:
            raise UserError("--ref %s: no such commit or tag in %s" % (args.ref, ", ".join(args.repo)))
        commit = proc.stdout.decode().strip()
        release = args.ref[1:] if re.fullmatch(r"v\d.*", args.ref) else args.ref
        print(render(extract(git, release, commit, args.submodule_mirrors)), end="")
        return 0
    root = None if (args.variants and args.out) else require_repo_root()
    variants = args.variants or root / "recipes" / "pytorch" / "variants.yaml"
    out_dir = args.out or root / "recipes" / "pytorch" / "upstream"
    wanted_pins = pins(variants)
    if args.release:
        known = list(dict.fromkeys(p.release for p in wanted_pins))
        for wanted in args.release:
            if wanted not in known:
                raise UserError("--release %s: not in %s; allowed: %s" % (wanted, variants, ", ".join(known)))
        wanted_pins = [p for p in wanted_pins if p.release in args.release]
    tables = [(pin.table, read_pin(gits, pin, args.submodule_mirrors)) for pin in wanted_pins]
    if args.check:
        drift, notes = check(tables, out_dir)
        if not args.release:
            drift += ["%s: no such release in %s" % (name, variants)
                      for name in stray_tables(out_dir, {"%s.json" % p.table for p in wanted_pins})]
        for line in notes:
            print("note: " + line)
        for line in drift:
            print(line)
        if drift:
            raise Failure("%d difference(s) between %s and upstream; regenerate with "
                          "`torchwin upstream-facts %s`" % (len(drift), out_dir, " ".join("--repo " + r for r in args.repo)))
        print("%d table(s) match upstream" % len(tables))
        return 0
    for name, facts in tables:
        path = out_dir / ("%s.json" % name)
        write_atomic(path, render(facts))
        print("wrote %s" % path)
    return 0


def read_pin(gits, pin, mirrors):
    """The facts of one pinned commit, read from the first repository holding it."""
    git = next((g for g in gits if g.has_commit(pin.commit)), gits[0])
    if pin.repository == UPSTREAM_URL:
        return extract(git, pin.release, pin.commit, mirrors)
    if not git.has_commit(pin.commit):
        raise UserError("commit %s of release %s (%s, for %s) is in none of --repo %s; add a clone of %s"
                        % (pin.commit, pin.release, pin.repository, pin.platform,
                           ", ".join(g.path for g in gits), pin.repository))
    return extract(git, pin.release, pin.commit, mirrors, source=fork_source(git, pin), repository=pin.repository)
