"""Cutouts from a survey mosaic with :func:`gamornet.cutouts.make_cutouts` (``python -m benchmarks.cutouts``).

Measures, on one float32 FITS mosaic with a TAN WCS (random noise, written to
a temporary folder) and a catalogue of sources spread uniformly over the
disc the mosaic holds at each scale and rotation, every cutout wholly on it:

- **cutouts per second** (the first ``--resample-sources`` rows, default
  2,000, on the resampling paths, which are far slower) on the copy path (the mosaic at the model's pixel
  scale, north up: its pixels are copied) and on the resampling path (the
  mosaic at another pixel scale, north up; or at the model's scale, rotated
  by 30 degrees: resampled with flux conserved), for the SDSS grid (167 x
  167 at 0.396"/px) and the CANDELS grid (83 x 83 at 0.06"/px).  Each run
  writes a cutout folder (``images.npy``, ``catalog.ecsv``), as
  ``gamornet cutout`` does; the mosaic is in the page cache (it was just
  written);
- **peak memory** of a fresh process running ``make_cutouts`` (CANDELS
  grid, copy path, the same sources) on a smaller and on the full mosaic:
  ``VmHWM``, which counts the mosaic's pages the process has mapped and
  read (file-backed, given back to the system under pressure), and at the
  end ``RssAnon`` (the process's own memory) and ``RssFile``;
- **catalogue route end to end**, when :func:`gamornet.predict_files`
  accepts ``catalog=`` and ``images=``: predicting straight from the
  catalogue and mosaic against ``make_cutouts`` to a folder then
  ``predict_files`` on it, with a small randomly initialised saved model.

Usage::

    python -m benchmarks.cutouts                  # 10,000^2 mosaic, 10^4 sources, both grids (several minutes)
    python -m benchmarks.cutouts --quick          # 2,000^2 mosaic, 1,000 sources, CANDELS (under a minute)
    python -m benchmarks.cutouts --survey SDSS --json cutouts.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

#: Mosaic pixel scale / model pixel scale of the "other scale" resampling case.
OTHER_SCALE = 0.75
#: Rotation (degrees) of the "rotated" resampling case.
ROTATION = 30.0
#: Paths measured: name -> (scale factor, rotation in degrees).
PATHS = {"copy": (1.0, 0.0), "resample_scale": (OTHER_SCALE, 0.0), "resample_rotated": (1.0, ROTATION)}
GRIDS = {"SDSS": (0.396, 167), "CANDELS": (0.06, 83)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000^2 mosaic, 1,000 sources, CANDELS only")
    parser.add_argument("--survey", choices=("SDSS", "CANDELS", "both"), default=None)
    parser.add_argument("--mosaic", type=int, default=None, help="mosaic side in pixels (default 10,000; quick 2,000)")
    parser.add_argument("--small-mosaic", type=int, default=None,
                        help="the smaller mosaic of the memory figure (default half of --mosaic)")
    parser.add_argument("--sources", type=int, default=None, help="catalogue rows (default 10,000; quick 1,000)")
    parser.add_argument("--resample-sources", type=int, default=None,
                        help="rows timed on the resampling paths (default 2,000; quick all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of the copy path (default 3; quick 2)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.survey = args.survey or ("CANDELS" if args.quick else "both")
    args.mosaic = args.mosaic or (2000 if args.quick else 10000)
    args.small_mosaic = args.small_mosaic or args.mosaic // 2
    args.sources = args.sources or (1000 if args.quick else 10000)
    args.resample_sources = min(args.resample_sources or (args.sources if args.quick else 2000), args.sources)
    args.repeats = args.repeats or (2 if args.quick else 3)
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the mosaic


def mosaic_header(side: int, pixel_scale: float, rotation: float = 0.0):
    """FITS header of a ``side``^2 float32 image, TAN WCS at (150, 2), north up rotated by ``rotation`` degrees."""
    from astropy.io import fits
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [(side + 1) / 2, (side + 1) / 2]
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    wcs.wcs.cd = np.array([[-c, s], [s, c]]) * pixel_scale / 3600
    header = fits.Header()
    header.update(SIMPLE=True, BITPIX=-32, NAXIS=2, NAXIS1=side, NAXIS2=side, EXTEND=True)
    header.extend(wcs.to_header(), update=True)
    return header


def write_mosaic(path: str, side: int, pixel_scale: float, seed: int = 0) -> None:
    """Write a ``side`` x ``side`` float32 FITS mosaic of noise, row block by row block (never whole in memory)."""
    header = mosaic_header(side, pixel_scale)
    with open(path, "wb") as f:
        f.write(header.tostring().encode("ascii"))
        rng = np.random.default_rng(seed)
        for start in range(0, side, 512):
            rows = min(512, side - start)
            f.write(rng.standard_normal((rows, side), dtype=np.float32).astype(">f4").tobytes())
        f.write(b"\0" * (-(side * side * 4) % 2880))


def set_wcs(path: str, side: int, pixel_scale: float, rotation: float) -> None:
    """Rewrite the mosaic's header in place (the same number of header blocks) with another scale and rotation."""
    text = mosaic_header(side, pixel_scale, rotation).tostring().encode("ascii")
    if len(text) != len(mosaic_header(side, 1.0).tostring()):
        raise RuntimeError("the new header does not fill as many blocks as the mosaic's")
    with open(path, "r+b") as f:
        f.write(text)


def catalogue(side: int, pixel_scale: float, n: int, size: float, seed: int = 1):
    """``n`` sources uniformly on the mosaic's inscribed disc (at ``pixel_scale``), cutouts of ``size`` mosaic
    pixels wholly on it at any rotation."""
    from astropy.table import Table
    from astropy.wcs import WCS

    wcs = WCS(mosaic_header(side, pixel_scale))
    margin = size * 0.75 + 4  # the rotated footprint's half diagonal
    rng = np.random.default_rng(seed)
    centre = (side - 1) / 2
    half = side / 2 - margin
    # a disc, so that the rotated mosaic of the same centre holds it too
    radius, angle = half * np.sqrt(rng.random(n)), rng.random(n) * 2 * np.pi
    x, y = centre + radius * np.cos(angle), centre + radius * np.sin(angle)
    ra, dec = wcs.pixel_to_world_values(x, y)
    return Table({"id": np.arange(n), "ra": ra, "dec": dec})


# --------------------------------------------------------------------------- measurements


def cut(catalog, mosaic: str, survey: str, output: str, pixel_scale: float | None = None) -> tuple[float, dict]:
    """Seconds of one ``make_cutouts`` run writing ``output``, and its flags and methods."""
    from gamornet.cutouts import make_cutouts

    start = time.perf_counter()
    table, _ = make_cutouts(catalog, [mosaic], output, survey=survey, progress=False, overwrite=True)
    seconds = time.perf_counter() - start
    counts = {str(k): int(v) for k, v in zip(*np.unique(np.asarray(table["cutout_flag"]), return_counts=True))}
    methods = sorted({str(m) for m in table["cutout_method"]})
    return seconds, {"flags": counts, "methods": methods}


def status_mb() -> dict:
    """``VmHWM``, ``RssAnon``, ``RssFile`` of this process (MB)."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmHWM", "RssAnon", "RssFile"):
                values[key] = int(line.split()[1]) / 1024
    return values


def child_memory(payload: dict) -> dict:
    """In a fresh process: ``make_cutouts`` of the catalogue on the mosaic into a folder; its memory."""
    from astropy.table import Table

    catalog = Table.read(payload["catalog"])
    seconds, info = cut(catalog, payload["mosaic"], payload["survey"], payload["output"])
    return {"seconds": seconds, **info, **status_mb()}


def run_child(payload: dict) -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "benchmarks.cutouts", "--child", json.dumps(payload)], env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_speed(args, tmp: str, survey: str, mosaic: str) -> dict:
    """Cutouts per second of each path for ``survey``'s grid."""
    scale, size = GRIDS[survey]
    # on the smallest field (the mosaic at OTHER_SCALE x the model's scale), so that every path has every source
    catalog = catalogue(args.mosaic, scale * OTHER_SCALE, args.sources, size / OTHER_SCALE)
    out = {}
    for name, (factor, rotation) in PATHS.items():
        set_wcs(mosaic, args.mosaic, scale * factor, rotation)
        rows = catalog if name == "copy" else catalog[:args.resample_sources]
        repeats = args.repeats if name == "copy" else 1
        times, info = [], {}
        for _ in range(repeats):
            seconds, info = cut(rows, mosaic, survey, os.path.join(tmp, "out"))
            times.append(seconds)
        rate = [len(rows) / t for t in times]
        out[name] = {"cutouts_per_s": statistics.median(rate), "runs": rate, "sources": len(rows),
                     "mosaic_scale": scale * factor, "rotation": rotation, **info}
        log(f"[{survey}] {name}: {out[name]['cutouts_per_s']:.0f} cutouts/s ({len(rows)} sources, {info})")
    return out


def measure_memory(args, tmp: str) -> dict:
    """Peak memory of a fresh ``make_cutouts`` process (CANDELS grid, copy path), small and full mosaic."""
    scale, size = GRIDS["CANDELS"]
    sides = (args.small_mosaic, args.mosaic)
    catalog = catalogue(min(sides), scale, args.sources, size, seed=2)
    catalog_path = os.path.join(tmp, "memory_catalog.ecsv")
    catalog.write(catalog_path, overwrite=True)
    out = {}
    for side in sides:
        mosaic = os.path.join(tmp, f"memory_{side}.fits")
        write_mosaic(mosaic, side, scale)
        # the same sky positions: the small mosaic's centre is the large one's
        out[str(side)] = run_child({"catalog": catalog_path, "mosaic": mosaic, "survey": "CANDELS",
                                    "output": os.path.join(tmp, f"memory_out_{side}")})
        os.remove(mosaic)
        log(f"[memory] {side}^2 mosaic: {out[str(side)]}")
    return out


def catalogue_route(args, tmp: str, mosaic: str) -> dict:
    """``predict_files(catalog=, images=)`` against ``make_cutouts`` then ``predict_files``, when available."""
    import gamornet

    parameters = inspect.signature(gamornet.predict_files).parameters
    if not {"catalog", "images"} <= set(parameters):
        return {"skipped": "gamornet.predict_files takes no catalog= / images= in this version"}
    from gamornet.keras_backend.model import build_keras_model

    scale, size = GRIDS["CANDELS"]
    set_wcs(mosaic, args.mosaic, scale, 0.0)
    n = min(args.sources, 256 if args.quick else 2000)
    catalog = catalogue(args.mosaic, scale, n, size, seed=3)
    model = os.path.join(tmp, "model.keras")
    build_keras_model((size, size, 1), seed=0).save(model)
    warm = os.path.join(tmp, "route_warm")  # TensorFlow imported and the model traced before the timed runs
    cut(catalog[:64], mosaic, "CANDELS", warm)
    gamornet.predict_files(warm, model, input_shape="CANDELS", progress=False)
    start = time.perf_counter()
    make_then_predict = os.path.join(tmp, "route_cutouts")
    cut(catalog, mosaic, "CANDELS", make_then_predict)
    gamornet.predict_files(make_then_predict, model, input_shape="CANDELS", progress=False,
                           output=os.path.join(tmp, "route_a.ecsv"), overwrite=True)
    two_steps = time.perf_counter() - start
    start = time.perf_counter()
    gamornet.predict_files(None, model, input_shape="CANDELS", catalog=catalog, images=[mosaic], progress=False,
                           output=os.path.join(tmp, "route_b.ecsv"), overwrite=True)
    direct = time.perf_counter() - start
    return {"sources": n, "two_steps_s": two_steps, "catalogue_route_s": direct,
            "two_steps_img_s": n / two_steps, "catalogue_route_img_s": n / direct}


def machine() -> dict:
    cpu, flags = "unknown CPU", []
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    return {"cpu": cpu, "cpus": os.cpu_count(), "features": [f for f in ("avx2", "avx512f") if f in flags],
            "load_average": list(os.getloadavg())}


def run(args) -> dict:
    surveys = ["SDSS", "CANDELS"] if args.survey == "both" else [args.survey]
    result = {"machine": machine(), "settings": {"mosaic": args.mosaic, "small_mosaic": args.small_mosaic,
                                                   "sources": args.sources, "resample_sources": args.resample_sources,
                                                   "repeats": args.repeats, "surveys": surveys}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gamornet-cutouts-") as tmp:
        mosaic = os.path.join(tmp, "mosaic.fits")
        log(f"writing a {args.mosaic}^2 float32 mosaic")
        write_mosaic(mosaic, args.mosaic, 0.06)
        result["speed"] = {survey: measure_speed(args, tmp, survey, mosaic) for survey in surveys}
        try:
            result["catalogue_route"] = catalogue_route(args, tmp, mosaic)
        except Exception as exc:  # a broken part must not stop the other measurements
            log(f"catalogue route failed: {type(exc).__name__}: {exc}")
            result["catalogue_route"] = {"error": f"{type(exc).__name__}: {exc}"}
        os.remove(mosaic)
        result["memory"] = measure_memory(args, tmp)
    result["elapsed_s"] = time.perf_counter() - started
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


def report(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    lines = [f"make_cutouts: {s['mosaic']:,}^2 float32 mosaic, {s['sources']:,} sources "
             f"({s['resample_sources']:,} on the resampling paths), {result['elapsed_s']:.0f} s",
             f"{m['cpu']}, {m['cpus']} CPUs ({', '.join(m['features']) or 'no avx2'}); load average "
             f"{', '.join(f'{x:.2f}' for x in m['load_average'])} at start, "
             f"{', '.join(f'{x:.2f}' for x in m.get('load_average_end', []))} at end", ""]
    names = {"copy": "copy (model's scale, north up)",
             "resample_scale": f"resample (scale x {OTHER_SCALE}, north up)",
             "resample_rotated": f"resample (model's scale, rotated {ROTATION:g} deg)"}
    for survey, paths in result["speed"].items():
        for name, fig in paths.items():
            lines.append(f"{survey:<8} {names[name]:<42} {fig['cutouts_per_s']:>9.1f} cutouts/s")
    lines.append("")
    for side, fig in result["memory"].items():
        lines.append(f"memory, CANDELS copy, {int(side):,}^2 mosaic: VmHWM {fig['VmHWM']:.0f} MB; at the end "
                     f"RssAnon {fig['RssAnon']:.0f} MB, RssFile {fig['RssFile']:.0f} MB")
    route = result["catalogue_route"]
    if "skipped" in route or "error" in route:
        lines.append(f"catalogue route: {'skipped' if 'skipped' in route else 'ERROR'} "
                     f"({route.get('skipped') or route['error']})")
    else:
        lines.append(f"catalogue route ({route['sources']} CANDELS sources): predict_files(catalog=, images=) "
                     f"{route['catalogue_route_img_s']:.1f} images/s; make_cutouts then predict_files "
                     f"{route['two_steps_img_s']:.1f} images/s")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child_memory(json.loads(args.child))))
        return 0
    result = run(args)
    text = report(result)
    print(text, end="")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
