"""``gamornet models`` and ``gamornet download``: the published models and the local cache."""

from __future__ import annotations

import argparse
import os
import sys

from gamornet.cli.args import int_at_least, number
from gamornet.published import models as published
from gamornet.published.download import DEFAULT_BACKOFF, DEFAULT_RETRIES, DEFAULT_TIMEOUT, group_signature
from gamornet.published.registry import FLAVORS, MODELS, model_names

__all__ = ["register_cli"]


def register_cli(subparsers) -> None:
    """Add the ``models`` and ``download`` subcommands."""
    models = subparsers.add_parser(
        "models",
        help="list the published models, whether each is cached, and where",
        description="List the published models, their files in the cache and the download sources.",
    )
    models.add_argument("--card", metavar="NAME_OR_PATH",
                        help="print the model card of a published model (e.g. SDSS_tl) or a model file: band, pixel "
                        "scale, cutout, redshift, units, preprocessing, policy, training")
    models.add_argument("--flavor", choices=FLAVORS, default="keras", help="with --card: whose policy (default: keras)")
    models.add_argument("--json", action="store_true", help="with --card: print it as JSON")
    models.set_defaults(func=_models)

    fetch = subparsers.add_parser(
        "download",
        help="download a published model into the cache",
        description="Download a published model into the cache (GAMORNET_HOME or the per-user cache directory), "
        "from GAMORNET_MODELS_URL or the authors' server.",
    )
    fetch.add_argument("name", choices=[*model_names(), "all"], help="published model, or 'all'")
    fetch.add_argument("--flavor", choices=[*FLAVORS, "all"], default="keras", help="default: keras")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar or messages; only print the path")
    fetch.add_argument("--timeout", type=number("--timeout", 0, low_open=True), default=DEFAULT_TIMEOUT,
                       help="seconds to wait for a connection or data (default: %(default)s)")
    fetch.add_argument("--retries", type=int_at_least("--retries", 0), default=DEFAULT_RETRIES,
                       help="extra attempts per URL (default: %(default)s)")
    fetch.add_argument("--backoff", type=number("--backoff", 0), default=DEFAULT_BACKOFF,
                       help="seconds before the first retry, doubled each time (default: %(default)s)")
    fetch.set_defaults(func=_download)


def _size(path: str) -> str:
    return f"{os.path.getsize(path) / 1e6:.1f} MB"


def _card(args: argparse.Namespace) -> int:
    from gamornet.published.cards import read_card

    name = args.card
    if name not in model_names() and not os.path.exists(name):
        raise FileNotFoundError(f"`--card` must name a published model ({', '.join(model_names())}) or a model file. "
                                f"Received: --card={name!r}")
    card = read_card(name, args.flavor)
    if card is None:
        print(f"{name}: no model card (a model file saved without one)", file=sys.stderr)
        return 1
    print(card.to_json() if args.json else card.describe())
    return 0


def _models(args: argparse.Namespace) -> int:
    if getattr(args, "card", None) is not None:
        return _card(args)
    root = published.cache_dir()
    origin = "GAMORNET_HOME" if os.environ.get("GAMORNET_HOME", "").strip() else "per-user default"
    print(f"Cache: {root} ({origin})")
    print(f"Sources: {' '.join(published.mirror_urls())}")
    if published.is_offline():
        print("Offline: GAMORNET_OFFLINE is set, nothing will be downloaded")
    for (name, flavor), info in sorted(MODELS.items()):
        state = "cached" if published.is_cached(name, flavor) else "not cached"
        print(f"\n{name:<12} {flavor:<8} input {info.input_shape:<8} {state}")
        for rel in info.files:
            path = str(root / rel)
            print(f"    {path}  [{_size(path) if os.path.isfile(path) else 'missing'}]")
    return 0


def _state(name: str, flavor: str) -> tuple | None:
    """Size, mtime and inode of a cached model's files; None when not all are cached."""
    root = published.cache_dir()
    try:
        return group_signature([root / rel for rel in MODELS[(name, flavor)].files])
    except OSError:
        return None


def _download(args: argparse.Namespace) -> int:
    """Fetch each model, or check its cached copy as thoroughly as a download (a damaged one is fetched again)."""
    names = model_names() if args.name == "all" else [args.name]
    flavors = list(FLAVORS) if args.flavor == "all" else [args.flavor]
    for name in names:
        for flavor in flavors:
            before = _state(name, flavor)
            path = published.fetch_model(name, flavor, progress=not args.quiet, timeout=args.timeout,
                                        retries=args.retries, backoff=args.backoff, verify=True)
            if before is not None and before == _state(name, flavor) and not args.quiet:
                print(f"{name} ({flavor}): the cached copy was checked and is sound", file=sys.stderr)
            print(path)
    return 0
