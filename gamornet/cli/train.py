"""``gamornet train`` and ``gamornet tl``: train or fine-tune GaMorNet on images stored on disk.

``DATA`` is a folder written by ``gamornet simulate`` (``images.npy`` and
``catalog.ecsv``) or a ``.npy`` stack given with ``--catalog``; it is read
memory-mapped, batch by batch.  A random ``--validation-fraction`` of it
validates.  Every run is resumable: ``DIR`` receives ``metrics.csv`` (an
``epoch`` column counting from 0), ``last.keras`` and ``run_state.json`` after
each epoch, the command's settings inside the latter, and
``gamornet train --resume DIR`` (or ``tl --resume``) continues an interrupted
run with those settings (``--epochs`` may raise the epoch count).
``gamornet tl`` with several ``--model`` or with ``--folds K`` adapts the model
to the labels with :func:`gamornet.adapt.adapt`: one run per starting model
(and fold) under ``DIR/runs/``, the best start kept, ``DIR/selection.json``
and ``DIR/report.html`` (``--resume DIR`` continues it as well).
"""

from __future__ import annotations

import argparse
import os
import secrets

from gamornet.cli.args import number, parse_bools
from gamornet.core.validation import check_input_shape, parse_input_shape

__all__ = ["register_cli", "DEFAULTS"]

#: Defaults of the options (those of gamornet_train_keras / gamornet_tl_keras where they overlap).
DEFAULTS: dict = {
    "epochs": 100, "batch_size": 64, "momentum": 0.9, "decay": 0.0, "nesterov": False, "checkpoint_freq": 0,
    "validation_fraction": 0.1, "augment": None, "schedule": "decay", "plateau_factor": 0.1, "plateau_patience": 10,
    "early_stopping": None, "preprocessing": None, "mixed_precision": None, "input_shape": None, "catalog": None,
    "model": None, "load_bools": "all", "train_bools": "all", "seed": None, "data": None, "keep_optimizer": False,
    "pixel_scale": None, "band": None,
}  # fmt: skip
_LR = {"train": 1e-4, "tl": 1e-5}


def _stored_shape(value):
    """The input shape of a run's settings: None (the data's own), an alias or ``H,W,C`` text, or a list."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return check_input_shape(tuple(value), "input_shape")
    return parse_input_shape(value, "input_shape")


def register_cli(subparsers) -> None:
    """Add the ``train`` and ``tl`` subcommands."""
    helps = {"train": "train GaMorNet from scratch on images on disk",
             "tl": "transfer learning: fine-tune one or several trained models on images on disk (--folds K: "
                   "cross-validated)"}
    description = __doc__.split("\n\n")[1].replace("\n", " ").replace("``", "")
    for command in ("train", "tl"):
        p = subparsers.add_parser(command, help=helps[command], description=description)
        p.add_argument("data", nargs="?", metavar="DATA", help="gamornet simulate folder, or .npy stack with --catalog")
        p.add_argument("--catalog", help="labels: a table with a 'label' column (disk/indeterminate/bulge)")
        p.add_argument("--output", metavar="DIR", help="run folder (metrics.csv, checkpoints, trained_model.keras)")
        p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR with its saved settings")
        if command == "tl":
            p.add_argument("--model", action="append", help="starting model: a published name (e.g. SDSS_sim) or a "
                           "file; repeat it to compare starts (one run each, same split and seed; the start of "
                           "highest validation accuracy is kept)")
            p.add_argument("--folds", type=int, metavar="K", help="cross-validate each start on K folds stratified "
                           "by label (out-of-fold predictions, cv_summary.json), then train the final model")
            p.add_argument("--final", choices=("all", "best-fold"), help="with --folds: train the final model on all "
                           "the labelled galaxies from the chosen start (all, default) or keep its best fold's model")
            p.add_argument("--load-bools", help="preset, 'all' or 8 true/false: layers loaded (default all)")
            p.add_argument("--train-bools", help="preset, 'all' or 8 true/false: layers trained (default all)")
        else:
            p.add_argument("--model", help="start from this saved model instead of new weights")
            p.add_argument("--preprocessing", choices=("linear", "asinh", "per_image"),
                           help="pixel scaling stored in the model (default none)")
        p.add_argument("--epochs", type=int, help=f"default {DEFAULTS['epochs']}")
        p.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
        p.add_argument("--input-shape", help="SDSS, CANDELS or H,W,C (default: the data's shape)")
        p.add_argument("--lr", type=float, help=f"learning rate (default {_LR[command]})")
        p.add_argument("--momentum", type=float, help=f"default {DEFAULTS['momentum']}")
        p.add_argument("--decay", type=float, help="Keras-2 decay: lr / (1 + decay * step) (default 0)")
        p.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
        p.add_argument("--validation-fraction", type=float, help="part of DATA kept for validation (default 0.1)")
        p.add_argument("--augment", choices=("none", "flips", "rotate", "flips+rotate"), help="default none")
        p.add_argument("--schedule", choices=("decay", "plateau"), help="learning-rate rule (default decay)")
        p.add_argument("--plateau-factor", type=float, help="plateau: multiply lr by this (default 0.1)")
        p.add_argument("--plateau-patience", type=int, help="plateau: epochs without improvement (default 10)")
        p.add_argument("--early-stopping", type=int, metavar="N", help="stop after N epochs without improvement")
        p.add_argument("--mixed-precision", choices=("bfloat16", "float16"), help="compute precision")
        p.add_argument("--checkpoint-freq", type=int, help="save model_NNNN.keras every this many epochs")
        p.add_argument("--seed", type=int, help="seed of the split, initialisation, shuffling, augmentation")
        p.add_argument("--keep-optimizer", action="store_true", default=None,
                       help="also save the optimiser state in trained_model.keras (about twice the size), to go on "
                       "training it with model.fit; checkpoints always keep it")
        p.add_argument("--pixel-scale", type=number("--pixel-scale", 0, low_open=True), metavar="ARCSEC",
                       help="arcsec per pixel of DATA, saved in the model's card (default: from a gamornet simulate "
                       "folder's settings, else unknown)")
        p.add_argument("--band", help="band of DATA (e.g. 'SDSS g'), saved in the model's card (default: from a "
                       "gamornet simulate folder of a preset survey, else unknown)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_main)


_KEYS = ("data", "catalog", "model", "epochs", "batch_size", "input_shape", "lr", "momentum", "decay", "nesterov",
         "validation_fraction", "augment", "schedule", "plateau_factor", "plateau_patience", "early_stopping",
         "mixed_precision", "checkpoint_freq", "seed", "preprocessing", "load_bools", "train_bools", "keep_optimizer",
         "pixel_scale", "band")


def _settings(args: argparse.Namespace) -> dict:
    """The run's settings from the arguments and the defaults (paths made absolute)."""
    from gamornet.published.models import is_published_model

    given = {k: getattr(args, k, None) for k in _KEYS}
    settings = {"command": args.command, **DEFAULTS, "lr": _LR[args.command],
                **{k: v for k, v in given.items() if v is not None}}
    if settings["data"] is None or args.output is None:
        raise ValueError(f"`gamornet {args.command}` needs DATA and --output DIR (or --resume DIR). "
                         f"Received: DATA={settings['data']!r}, --output={args.output!r}")
    if args.command == "tl" and settings["model"] is None:
        raise ValueError("`gamornet tl` needs --model NAME_OR_PATH. Received: --model=None")
    if args.command == "tl" and isinstance(settings["model"], list):
        settings["model"] = settings["model"][0] if len(settings["model"]) == 1 else settings["model"]
    for key in ("data", "catalog"):
        if settings[key] is not None:
            settings[key] = os.path.abspath(settings[key])
    if isinstance(settings["model"], list):
        settings["model"] = [m if is_published_model(m) else os.path.abspath(m) for m in settings["model"]]
    elif settings["model"] is not None and not is_published_model(settings["model"]):
        settings["model"] = os.path.abspath(settings["model"])
    if settings["augment"] == "none":
        settings["augment"] = None
    if settings["seed"] is None:
        settings["seed"] = secrets.randbelow(2**31)
    settings["input_shape"] = _stored_shape(settings["input_shape"])
    parse_bools(settings["load_bools"], "--load-bools")
    parse_bools(settings["train_bools"], "--train-bools")
    return settings


def _adapts(args: argparse.Namespace) -> bool:
    """Whether ``gamornet tl`` adapts with :mod:`gamornet.adapt` (several --model, or --folds)."""
    if args.command != "tl":
        return False
    several = len(args.model or []) > 1 or args.folds is not None
    if args.final is not None and args.folds is None:
        raise ValueError(f"`--final` needs --folds K. Received: --final={args.final}")
    return several


def _main(args: argparse.Namespace) -> int:
    from gamornet.core.run_files import STATE_FILE, read_run_state

    if args.command == "tl" and args.resume is not None:
        from gamornet.adapt.files import SETTINGS_FILE

        if os.path.isfile(os.path.join(args.resume, SETTINGS_FILE)):
            return _resume_adapt(args)
    if args.resume is None and _adapts(args):
        return _adapt(args)
    if args.resume is not None:
        state = read_run_state(args.resume) if os.path.isdir(args.resume) else None
        if state is None or "cli" not in state:
            raise FileNotFoundError(f"`--resume` must name a run folder written by gamornet train / tl (with "
                                    f"{STATE_FILE}). Received: --resume={args.resume!r}")
        settings = dict(state["cli"])
        if args.epochs is not None:
            settings["epochs"] = args.epochs
        output = args.resume
    else:
        settings = _settings(args)
        output = args.output
        from gamornet.adapt.files import SETTINGS_FILE

        if any(os.path.isfile(os.path.join(output, name)) for name in (STATE_FILE, SETTINGS_FILE)):
            raise FileExistsError(f"--output already holds a run (continue it with --resume {output}, or choose "
                                  f"another folder). Received: --output={output!r}")
    return _run(settings, output, quiet=args.quiet)


def _card(settings: dict) -> dict:
    """Card facts of the training data: given, else the settings of a ``gamornet simulate`` folder."""
    from gamornet.data.cards import PRESET_BANDS

    card = {"pixel_scale_arcsec": settings.get("pixel_scale"), "band": settings.get("band")}
    catalog = os.path.join(settings["data"], "catalog.ecsv")
    if settings.get("catalog") is None and os.path.isfile(catalog):
        from astropy.table import Table

        config = Table.read(catalog, format="ascii.ecsv").meta.get("config") or {}
        if card["pixel_scale_arcsec"] is None and isinstance(config.get("pixel_scale"), (int, float)):
            card["pixel_scale_arcsec"] = float(config["pixel_scale"])
        if card["band"] is None:
            card["band"] = PRESET_BANDS.get(config.get("name"))
    return card


def _run(settings: dict, output: str, quiet: bool) -> int:
    from gamornet import data
    from gamornet.keras_backend import training
    from gamornet.keras_module import gamornet_tl_keras, gamornet_train_keras

    source = data.open_training_data(settings["data"], settings["catalog"])
    fraction = settings["validation_fraction"]
    train, val = source.split(fraction, settings["seed"]) if fraction else (source, None)
    shape = _stored_shape(settings["input_shape"]) or source.image_shape
    common = dict(files_save_path=output, epochs=settings["epochs"], checkpoint_freq=settings["checkpoint_freq"],
                  batch_size=settings["batch_size"], lr=settings["lr"], momentum=settings["momentum"],
                  decay=settings["decay"], nesterov=settings["nesterov"], save_model=True, verbose=0 if quiet else 1,
                  augment=settings["augment"], schedule=settings["schedule"],
                  plateau_factor=settings["plateau_factor"], plateau_patience=settings["plateau_patience"],
                  early_stopping=settings["early_stopping"], resume=True,
                  mixed_precision=settings["mixed_precision"], seed=settings["seed"],
                  keep_optimizer=bool(settings.get("keep_optimizer", False)), card=_card(settings))
    with training.recorded_settings(settings):
        if settings["command"] == "tl":
            gamornet_tl_keras(train, None, val, None, shape, model_load_path=settings["model"],
                              load_layers_bools=parse_bools(settings["load_bools"], "--load-bools"),
                              trainable_bools=parse_bools(settings["train_bools"], "--train-bools"), **common)
        else:
            gamornet_train_keras(train, None, val, None, shape, load_model=settings["model"] is not None,
                                 model_load_path=settings["model"] or "./", preprocessing=settings["preprocessing"],
                                 **common)
    if not quiet:
        print(f"Trained model: {os.path.join(output, training.FINAL_MODEL_FILE)}; "
              f"metrics: {os.path.join(output, training.METRICS_FILE)}")
    return 0


def _tl_options(settings: dict) -> dict:
    """The options of :func:`gamornet.adapt.adapt` (those of gamornet_tl_keras) from the command's settings."""
    keys = ("epochs", "batch_size", "lr", "momentum", "decay", "nesterov", "augment", "schedule", "plateau_factor",
            "plateau_patience", "early_stopping", "mixed_precision", "checkpoint_freq")
    options = {k: settings[k] for k in keys}
    options.update(load_layers_bools=parse_bools(settings["load_bools"], "--load-bools"),
                   trainable_bools=parse_bools(settings["train_bools"], "--train-bools"),
                   keep_optimizer=bool(settings["keep_optimizer"]), card=_card(settings))
    return options


def _adapt(args: argparse.Namespace) -> int:
    """``gamornet tl`` with several --model or --folds: :func:`gamornet.adapt.adapt`."""
    from gamornet.adapt import adapt

    settings = _settings(args)
    models = settings["model"] if isinstance(settings["model"], list) else [settings["model"]]
    result = adapt(settings["data"], settings["catalog"], models, args.output, folds=args.folds,
                   final=args.final or "all", seed=settings["seed"],
                   validation_fraction=settings["validation_fraction"],
                   input_shape=settings["input_shape"], verbose=0 if args.quiet else 1, **_tl_options(settings))
    if args.quiet:
        print(result.message)
    return 0


def _resume_adapt(args: argparse.Namespace) -> int:
    """``gamornet tl --resume DIR`` of an adaptation: :func:`gamornet.adapt.resume_adapt`."""
    from gamornet.adapt import resume_adapt

    result = resume_adapt(args.resume, epochs=args.epochs, verbose=0 if args.quiet else 1)
    if args.quiet:
        print(result.message)
    return 0
