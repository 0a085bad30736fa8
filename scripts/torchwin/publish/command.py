"""`torchwin publish`: upload package files to anaconda.org and prune old builds there.

Uploads go through anaconda-client's Python API (binstar_client), the same
calls `anaconda upload` makes: look for the file, create the package and
release when missing, then stage, upload and commit the file with its label.
Every file is looked up before anything is uploaded, and each gets one
decision: upload it; skip it (the same file is already there); or refuse it
(a file of that name is there with other content -- unless --skip-rebuilt says
that for these files a rebuild of an unchanged recipe is expected, and the
copy there is kept). One refusal stops the run before any upload. --dry-run
makes the same look-ups and prints the decisions, changing nothing.

The owner and API URL come from channel/channel.yaml; the token only from the
environment variable ANACONDA_API_TOKEN, and it is never printed: every
message passes through a filter that blanks it, even one an error response
echoes back, and while publish runs a logging filter does the same for what
anaconda-client, requests and urllib3 log themselves (anaconda-client logs a
server's Conda-Token-Warning header as it comes). Network errors, 5xx answers
and 429 (rate limit) are retried with exponential back-off; any other 4xx is
final, and so is a host name that does not resolve (offline, or a wrong API
URL: retrying cannot help). Uploads stop at the first file that fails; a table
then says, for every file, uploaded / skipped / failed / not attempted.
`--prune` applies channel.yaml's retention to the files on anaconda.org, as
`torchwin channel prune` does locally.

A package whose recipe keeps it in one label (`extra: torchwin: label: L`, which
the engine copies into its info/about.json; recipes/cuda-runtime's label
cuda-runtime) is refused under any other --label, before any look-up.
"""

import argparse
import os
import time
from pathlib import Path

from torchwin.channel.config import load_channel_config
from torchwin.channel.package_check import check_package, check_pinned_labels
from torchwin.errors import UserError
from torchwin.publish.anaconda import make_api
from torchwin.publish.prune import Pruner
from torchwin.publish.redact import Redactor, redacted_logging
from torchwin.publish.upload import Uploader

TOKEN_ENV = "ANACONDA_API_TOKEN"
MIN_TOKEN = 16  # anaconda.org tokens are longer; a shorter one is a mistake, and blanking it would blank text

DESCRIPTION = """\
Upload package files to the anaconda.org channel of channel/channel.yaml
(owner `anaconda.owner`), with a label (default main). Every file is looked up
first: one already there is skipped; one whose name is there with other
content is refused, and then nothing is uploaded -- unless --skip-rebuilt, for
packages every run rebuilds from an unchanged recipe (same name, version and
build; only timestamps differ), where the copy on anaconda.org is kept.

The token is read from ANACONDA_API_TOKEN only and never printed. Transient
failures (network, 5xx, 429) are retried with exponential back-off; other 4xx
are final. --dry-run makes the same look-ups (with the token if it is set,
anonymously otherwise) and prints, per file, upload / skip / refuse and the
label; it exits 1 if the real run would refuse a file.

--prune applies the retention rules of channel.yaml to what is on anaconda.org
(a file labelled main is never removed). Always look first with --dry-run.

Packages whose recipe names a label (extra: torchwin: label: L in recipe.yaml,
e.g. recipes/cuda-runtime's cudatoolkit and cudnn: label cuda-runtime) are
published only with --label L; under another label the run stops first.
"""
EPILOG = """\
examples:
  torchwin publish --dry-run --label nightly output/win-64/*.conda
  ANACONDA_API_TOKEN=... torchwin publish --label nightly output/win-64/*.conda
  ANACONDA_API_TOKEN=... torchwin publish --label nightly --skip-rebuilt toolchain-channel/*/*.conda
  torchwin publish --prune --label nightly --dry-run
  ANACONDA_API_TOKEN=... torchwin publish --label cuda-runtime channel/local/label/cuda-runtime/*/*.conda
"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "publish",
        help="upload packages to anaconda.org; prune old nightlies there",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", metavar="FILE", type=Path, help=".conda or .tar.bz2 files")
    parser.add_argument("--label", metavar="L", help="label from channel.yaml (default: main)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="look each file up and print upload / skip / refuse with the label; change nothing "
        "(no token needed: without ANACONDA_API_TOKEN the look-ups are anonymous)",
    )
    parser.add_argument(
        "--skip-rebuilt",
        action="store_true",
        help="a file whose name is already on anaconda.org with other content is skipped, not refused: "
        "for packages rebuilt every run from an unchanged recipe (the nightly's toolchain packages)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="also remove builds retention lets go (of --label, or of every label with a rule)",
    )
    parser.add_argument("--config", metavar="FILE", type=Path, help="default: channel/channel.yaml")
    parser.add_argument("--api-url", metavar="URL", help="anaconda.org API (default: from channel.yaml)")
    parser.set_defaults(func=run)


def run(args, sleep=time.sleep):
    if not args.files and not args.prune:
        raise UserError("nothing to do: give package FILEs to upload and/or --prune")
    config = load_channel_config(args.config)
    label = config.check_label(args.label)
    packages = [check_package(f) for f in args.files]  # all checked before anything is looked up
    check_pinned_labels([pkg.path for pkg in packages], label, config, "publish it", "nothing uploaded")
    raw = os.environ.get(TOKEN_ENV) or ""
    token = read_token(raw)
    if not args.dry_run and token is None:
        raise UserError(f"{TOKEN_ENV} is not set: export an anaconda.org API token to publish")
    redact = Redactor(raw or None)
    out = _printer(redact)
    if args.dry_run:
        how = "with the token" if token else f"anonymously ({TOKEN_ENV} is not set: private files are not seen)"
        out(f"# dry run: looking up on anaconda.org ({config.owner}) {how}; nothing is changed")

    api = make_api(token, args.api_url or config.api_url)
    with redacted_logging(redact):
        if packages:
            uploader = Uploader(api, config.owner, redact, sleep, out=out)
            uploader.publish(packages, label, skip_rebuilt=args.skip_rebuilt, dry_run=args.dry_run)
        if args.prune:
            labels = [label] if args.label else list(config.retention)
            Pruner(api, config.owner, redact, sleep, out=out).prune(config, labels, dry_run=args.dry_run)
    return 0


def read_token(raw):
    """The token from ANACONDA_API_TOKEN's value, surrounding whitespace (a pasted newline) stripped.

    A UserError, never showing it, when what is left has whitespace or control characters inside
    or is too short to be a token.
    """
    token = raw.strip()
    if not token:
        return None
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token):
        raise UserError(f"{TOKEN_ENV} has a space, line break or control character inside it; "
                        "set it to the token alone")
    if len(token) < MIN_TOKEN:
        raise UserError(f"{TOKEN_ENV} is {len(token)} characters long, too short for an anaconda.org "
                        f"token (at least {MIN_TOKEN}); set it to the whole token")
    return token


def _printer(redact):
    def out(text):
        print(redact(text), flush=True)

    return out
