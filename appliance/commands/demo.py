"""``tce demo [DIR] [--keep-running]``: the whole chain on loopback with a generated sample.

The orchestration is :mod:`appliance.demo.run`; this module only parses the arguments and maps
a folder that cannot be used to exit status 2. The demo needs no configuration: it makes its own
node folders (``tce init``) inside DIR, so ``--config`` and ``TCE_CONFIG`` are not used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DIR = Path("demo")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo", help="run the whole chain on loopback with a generated sample",
        description="Generate a sample of fictitious patients (CT, MR, secondary capture, SR,"
                    " multi-frame; identifiers planted in sequences, private tags and free"
                    " text), start stage 1 and the Receiver on free loopback ports, send the"
                    " sample by C-STORE, write PDI media, import it into stage 2, preview,"
                    " approve research-age-band-5y, export, run 'tce verify' and show a"
                    " before/after table. Everything stays in DIR: media, DICOMDIR, logs,"
                    " databases.",
        epilog="Exit status: 0 every check passed, 1 a check failed, 2 DIR cannot be used."
               " DIR is replaced only if an earlier 'tce demo' made it.")
    parser.add_argument("dir", metavar="DIR", type=Path, nargs="?", default=DEFAULT_DIR,
                        help=f"folder for everything the demo makes (default: ./{DEFAULT_DIR})")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave stage 1 and the Receiver running afterwards, print their AE"
                             " titles and ports, and stop them on Ctrl-C or SIGTERM")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="choose other fictitious patients and UIDs (default: 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.demo.folders import DemoFolderError
    from appliance.demo.run import run_demo
    from appliance.settings import ConfigError

    try:
        return run_demo(args.dir, keep_running=args.keep_running, seed=args.seed)
    except DemoFolderError as exc:
        raise ConfigError(str(exc)) from None
