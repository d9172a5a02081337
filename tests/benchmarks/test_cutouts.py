"""The cutout benchmark of the checkout (``python -m benchmarks.cutouts``).

- ``test_quick_settings``: ``--quick`` is a small mosaic, about 10^3
  sources, every one of them on the resampling paths too; the full form is a
  10,000^2 mosaic with 10^4 sources.
- ``test_mosaic_header``: the mosaic's header can be rewritten in place with
  another scale and rotation (the same length), and the catalogue's sources
  lie on the mosaic at every scale and rotation measured.
- ``test_quick_run`` (slow, about half a minute on 2 cores):
  ``python -m benchmarks.cutouts --quick --json FILE`` in a subprocess; the
  JSON must hold every figure (finite, positive) and the table must print
  them.  Nothing about speed is asserted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.cutouts import GRIDS, OTHER_SCALE, PATHS, catalogue, mosaic_header, parse_args, report

from helpers import run_benchmark_quick


def test_quick_settings():
    quick = parse_args(["--quick"])
    assert (quick.mosaic, quick.sources, quick.resample_sources, quick.survey) == (2000, 1000, 1000, "CANDELS")
    full = parse_args([])
    assert (full.mosaic, full.small_mosaic, full.sources, full.survey) == (10000, 5000, 10000, "both")


def test_mosaic_header():
    from astropy.wcs import WCS

    side = 1000
    lengths = {len(mosaic_header(side, 0.06 * f, r).tostring()) for f, r in PATHS.values()}
    assert len(lengths) == 1
    scale, size = GRIDS["CANDELS"]
    catalog = catalogue(side, scale * OTHER_SCALE, 200, size / OTHER_SCALE)
    for factor, rotation in PATHS.values():
        x, y = WCS(mosaic_header(side, scale * factor, rotation)).world_to_pixel_values(catalog["ra"], catalog["dec"])
        assert np.all((x > size) & (x < side - size) & (y > size) & (y < side - size))


@pytest.mark.slow
def test_quick_run(tmp_path, capsys):
    figures, stdout = run_benchmark_quick("benchmarks.cutouts", tmp_path / "figures.json", capsys)
    assert set(figures["speed"]) == {"CANDELS"}
    for name, fig in figures["speed"]["CANDELS"].items():
        assert name in PATHS
        assert math.isfinite(fig["cutouts_per_s"]) and fig["cutouts_per_s"] > 0, name
        assert fig["flags"] == {"ok": fig["sources"]}
        assert fig["methods"] == ["copy" if name == "copy" else "resample"]
    assert len(figures["memory"]) == 2
    for fig in figures["memory"].values():
        assert all(fig[key] > 0 for key in ("VmHWM", "RssAnon", "RssFile"))
    route = figures["catalogue_route"]
    assert "skipped" in route or route["catalogue_route_img_s"] > 0
    assert report(figures) in stdout
