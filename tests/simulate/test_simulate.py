"""Tests of gamornet.simulate: flux accuracy, labels, reproducibility, files and errors."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from gamornet import cli
from gamornet import simulate as sim

from helpers import REPO, run_gamornet

NO_BULGE = 99.0  # a magnitude whose flux is negligible


def params(**changes) -> dict[str, float]:
    base = {
        "disk_mag": 18.0, "bulge_mag": 18.0, "disk_re": 6.0, "bulge_re": 1.0, "disk_q": 0.5, "bulge_q": 0.7,
        "disk_pa": 30.0, "bulge_pa": 40.0, "disk_x": 100.2, "disk_y": 99.7, "bulge_x": 100.4, "bulge_y": 99.9,
    }
    base.update(changes)
    return base


def flux(mag: float, config: sim.SurveyConfig) -> float:
    return 10 ** (-0.4 * (mag - config.zero_point))


@pytest.mark.parametrize(
    "survey, changes",
    [
        ("SDSS", {}),  # both components, unresolved bulge cusp (re = 1 px)
        ("SDSS", {"bulge_re": 0.6, "bulge_q": 0.3, "disk_mag": NO_BULGE}),  # bulge alone, cusp well below a pixel
        ("SDSS", {"bulge_re": 4.0, "bulge_mag": NO_BULGE, "disk_q": 0.3, "disk_re": 12.0}),  # disk alone
        ("SDSS", {"bulge_mag": NO_BULGE, "disk_q": 0.5, "disk_re": 10.5, "disk_x": 100.0, "disk_y": 100.0}),
        ("CANDELS", {"disk_re": 1.0, "disk_q": 0.25, "bulge_re": 2.5, "bulge_q": 0.4, "bulge_mag": 20.0}),
    ],
)
def test_flux_conserved_against_analytic(survey, changes):
    config = sim.get_config(survey, add_noise=False, shape=(201, 201))
    p = params(**changes)
    image = sim.render_galaxy(p, config)
    expected = flux(p["disk_mag"], config) + flux(p["bulge_mag"], config)
    # Light beyond the 100 px half-width is lost: bound it analytically.
    inside = sum(sim.sersic_enclosed_flux(99.0, flux(p[f"{c}_mag"], config), p[f"{c}_re"], n)
                 for c, n in (("disk", 1), ("bulge", 4)))
    assert inside / expected > 0.995
    assert image.sum() == pytest.approx(expected, rel=0.005)  # the brief asks 1%; the renderer does better
    assert image.sum() > inside * 0.995
    assert image.dtype == np.float32 and image.shape == (201, 201)


def test_unresolved_cusp_lands_in_the_central_pixel():
    # A round n=4 bulge of re = 0.5 px centred on a pixel, no PSF: the central pixel holds at least the
    # flux inside its inscribed circle (r = 0.5) and at most that inside its circumscribed one (r = 0.707).
    config = sim.get_config("SDSS", add_noise=False, psf_fwhm=0.0, shape=(41, 41))
    p = params(disk_mag=NO_BULGE, bulge_re=0.5, bulge_q=1.0, bulge_x=20.0, bulge_y=20.0)
    image = sim.render_galaxy(p, config).astype(float)
    total = flux(p["bulge_mag"], config)
    low, high = (sim.sersic_enclosed_flux(r, total, 0.5, 4) for r in (0.5, math.sqrt(0.5)))
    assert low <= image[20, 20] <= high
    assert image.sum() == pytest.approx(total, rel=0.005)
    assert image[20, 21] == pytest.approx(image[21, 20], rel=0.01)  # round profile stays round


def test_centre_and_position_angle_conventions():
    # x is the column, y the row, pa counter-clockwise from +x; the PSF must not shift the light.
    config = sim.get_config("SDSS", add_noise=False)
    p = params(bulge_mag=NO_BULGE, disk_re=12.0, disk_q=0.3, disk_pa=30.0, disk_x=83.3, disk_y=81.6)
    image = sim.render_galaxy(p, config).astype(float)
    yy, xx = np.mgrid[:167, :167]
    total = image.sum()
    xc, yc = (image * xx).sum() / total, (image * yy).sum() / total
    assert (xc, yc) == (pytest.approx(83.3, abs=0.02), pytest.approx(81.6, abs=0.02))
    ixx, iyy, ixy = ((image * a * b).sum() / total for a, b in ((xx - xc, xx - xc), (yy - yc, yy - yc),
                                                                 (xx - xc, yy - yc)))
    assert math.degrees(0.5 * math.atan2(2 * ixy, ixx - iyy)) == pytest.approx(30.0, abs=0.5)


def test_concentration_rises_with_bt():
    config = sim.get_config("SDSS", add_noise=False)
    concentrations = []
    for delta in (2.5, 1.0, 0.0, -1.0, -2.5):  # bulge_mag - disk_mag: bt rises
        p = params(disk_re=15.0, bulge_re=5.0, disk_x=83.0, disk_y=83.0, bulge_x=83.0, bulge_y=83.0,
                   bulge_mag=18.0 + delta)
        image = sim.render_galaxy(p, config).astype(float)
        yy, xx = np.mgrid[:167, :167]
        concentrations.append(image[(xx - 83) ** 2 + (yy - 83) ** 2 <= 9].sum() / image.sum())
    assert np.all(np.diff(concentrations) > 0.01), concentrations


def test_labels_follow_drawn_fluxes():
    images, catalog = sim.simulate_galaxies(40, "CANDELS", seed=3, workers=1, progress=False)
    config = sim.get_config("CANDELS")
    fd = 10 ** (-0.4 * (np.asarray(catalog["disk_mag"]) - config.zero_point))
    fb = 10 ** (-0.4 * (np.asarray(catalog["bulge_mag"]) - config.zero_point))
    bt = fb / (fb + fd)
    np.testing.assert_allclose(catalog["bt"], bt, rtol=1e-12)
    expected = np.where(bt < 0.45, "disk", np.where(bt <= 0.55, "indeterminate", "bulge"))
    assert list(catalog["label"]) == list(expected)
    assert list(catalog["class_index"]) == [("disk", "indeterminate", "bulge").index(v) for v in expected]
    assert images.shape == (40, 83, 83, 1) and images.dtype == np.float32
    assert list(sim.label_index_from_bt([0.4499, 0.45, 0.5, 0.55, 0.5501])) == [0, 1, 1, 1, 2]


def test_default_and_balanced_class_mix():
    rng = np.random.default_rng(0)
    counts = {}
    for mode in ({}, {"balanced": True}):
        config = sim.get_config("SDSS", **mode)
        bts = []
        for _ in range(3000):
            p = sim.draw_parameters(config, rng)
            assert 15 <= p["bulge_mag"] <= 22 and 15 <= p["disk_mag"] <= 22  # SDSS keeps the bulge in range
            assert abs(p["bulge_mag"] - p["disk_mag"]) <= 3.2 + 1e-9
            bts.append(1 / (1 + 10 ** (-0.4 * (p["disk_mag"] - p["bulge_mag"]))))
        counts[bool(mode)] = np.bincount(sim.label_index_from_bt(bts), minlength=3) / 3000
    assert 0.04 < counts[False][1] < 0.13  # the paper's sampling: few indeterminates
    np.testing.assert_allclose(counts[True], 1 / 3, atol=0.04)


def test_sky_noise_level():
    config = sim.get_config("CANDELS", shape=(64, 64))
    image = sim.render_galaxy(params(disk_mag=NO_BULGE, bulge_mag=NO_BULGE), config, np.random.default_rng(1))
    sky = 10 ** (-0.4 * (config.sky_sb - config.zero_point)) * config.pixel_scale**2
    assert float(image.std()) == pytest.approx(math.sqrt(sky / config.gain), rel=0.05)
    assert abs(float(image.mean())) < 0.05 * image.std()


def test_reproducible_across_workers_chunks_and_batches(tmp_path):
    one, cat_one = sim.simulate_galaxies(6, "CANDELS", seed=11, workers=1, progress=False)
    two, cat_two = sim.simulate_galaxies(6, "CANDELS", seed=11, workers=2, progress=False)
    np.testing.assert_array_equal(one, two)
    assert list(cat_one["bt"]) == list(cat_two["bt"])
    sim.simulate_to_disk(tmp_path / "a", 6, "CANDELS", seed=11, workers=1, chunk_size=4, progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "images.npy"), one)
    images, labels = next(sim.iter_batches(3, "CANDELS", seed=11, start=3))
    np.testing.assert_array_equal(images, one[3:])
    np.testing.assert_array_equal(labels.argmax(axis=1), cat_one["class_index"][3:])
    other, _ = sim.simulate_galaxies(2, "CANDELS", seed=12, workers=1, progress=False)
    assert not np.array_equal(other, one[:2])


def test_cli_writes_memmappable_set_with_fits(tmp_path, capsys):
    out = tmp_path / "set"
    png = tmp_path / "montage.png"
    argv = ["simulate", "--survey", "CANDELS", "-n", "5", "--seed", "2", "--output", str(out), "--fits",
            "--quiet", "--workers", "1", "--montage", str(png)]
    assert cli.main(argv) == 0
    images = np.load(out / "images.npy", mmap_mode="r")
    assert isinstance(images, np.memmap) and images.dtype == np.float32 and images.shape == (5, 83, 83, 1)
    catalog = Table.read(out / "catalog.ecsv")
    for column in ("id", *sim.PARAM_NAMES, "bt", "label", "class_index"):
        assert column in catalog.colnames
    assert list(catalog["id"]) == list(range(5)) and catalog.meta["survey"] == "CANDELS"
    for i in range(5):
        with fits.open(out / "fits" / f"gal_{i:06d}.fits") as hdul:
            np.testing.assert_array_equal(hdul[0].data, images[i, :, :, 0])
            assert hdul[0].header["BT"] == pytest.approx(catalog["bt"][i])
            assert hdul[0].header["LABEL"] == catalog["label"][i]
    assert not list(out.rglob("*.part"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 500_000
    assert cli.main(argv) == 2  # refuses to overwrite an existing set
    assert "overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sim.simulate_galaxies(0, progress=False), "Received: n=0"),
        (lambda: sim.simulate_galaxies(2, "HST", progress=False), "Received: survey='HST'"),
        (lambda: sim.simulate_galaxies(2, workers=0, progress=False), "Received: workers=0"),
        (lambda: sim.simulate_galaxies(2, seed=-1, progress=False), "Received: seed=-1"),
        (lambda: sim.get_config("SDSS", disk_re=(5, 1)), r"`disk_re`.*Received: disk_re=\(5, 1\)"),
        (lambda: sim.get_config("SDSS", disk_q=(0.2, 1.5)), "Received: disk_q"),
        (lambda: sim.get_config("SDSS", bt_mode="random"), "Received: bt_mode='random'"),
        (lambda: sim.get_config("SDSS", colour="red"), r"Unknown simulation setting.*Received: colour='red'"),
        (lambda: sim.simulate_to_disk("x", 2, chunk_size=0, progress=False), "Received: chunk_size=0"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cli_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["simulate", "-n", "0", "--output", str(tmp_path)])
    assert exc.value.code == 2 and "Received: -n='0'" in capsys.readouterr().err
    assert cli.main(["simulate", "--survey", "HST", "-n", "2", "--output", str(tmp_path)]) == 2
    assert "Received: --survey='HST'" in capsys.readouterr().err
    assert cli.main(["simulate", "-n", "2"]) == 2
    assert "--output" in capsys.readouterr().err




def _fits_seeds(out: Path) -> dict[str, int]:
    return {f.name: fits.getheader(f)["SEED"] for f in sorted((out / "fits").glob("gal_*.fits*"))}


def _assert_one_set(out: Path) -> None:
    """``out`` holds files of at most one set; a catalogue means the whole set is there."""
    seeds = _fits_seeds(out)
    assert len(set(seeds.values())) <= 1, seeds
    if (out / "catalog.ecsv").exists():
        catalog = Table.read(out / "catalog.ecsv")
        assert len(np.load(out / "images.npy", mmap_mode="r")) == len(catalog)
        assert set(seeds.values()) <= {catalog.meta["seed"]}
        assert not seeds or sorted(seeds) == [sim.FITS_NAME.format(i) for i in catalog["id"]]


def test_overwrite_replaces_the_whole_set(tmp_path):
    out = tmp_path / "set"
    base = ["simulate", "--survey", "CANDELS", "--output", str(out), "--quiet", "--workers", "1"]
    assert cli.main([*base, "-n", "6", "--seed", "0", "--fits"]) == 0
    assert cli.main([*base, "-n", "3", "--seed", "1", "--fits", "--overwrite"]) == 0
    assert _fits_seeds(out) == {sim.FITS_NAME.format(i): 1 for i in range(3)}  # no stale file of the old set
    _assert_one_set(out)
    assert cli.main([*base, "-n", "2", "--seed", "2", "--overwrite"]) == 0
    assert _fits_seeds(out) == {} and not (out / "fits").exists()  # the new set has no FITS files
    _assert_one_set(out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["catalog.ecsv", "images.npy"]
    # FITS files of a set whose catalogue is gone still count as a set
    assert cli.main([*base, "-n", "2", "--seed", "3", "--fits", "--overwrite"]) == 0
    (out / "catalog.ecsv").unlink()
    (out / "images.npy").unlink()
    with pytest.raises(FileExistsError, match="overwrite"):
        sim.simulate_to_disk(out, 2, "CANDELS", seed=4, workers=1, progress=False)


def test_interrupted_overwrite_never_mixes_two_sets(tmp_path):
    out = tmp_path / "set"
    assert cli.main(["simulate", "--survey", "CANDELS", "-n", "20", "--seed", "0", "--fits", "--output", str(out),
                     "--quiet", "--workers", "1"]) == 0
    started = time.time()
    child = subprocess.Popen([sys.executable, "-m", "gamornet", "simulate", "--survey", "CANDELS", "-n", "400",
                              "--seed", "1", "--fits", "--output", str(out), "--quiet", "--workers", "1",
                              "--overwrite"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            fresh = [p for p in out.rglob("gal_*.fits*") if p.stat().st_mtime >= started]
            if len(fresh) >= 3:  # the new set is being written
                break
            time.sleep(0.005)
        assert child.poll() is None, child.stderr.read()
        child.kill()
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    _assert_one_set(out)
    assert set(_fits_seeds(out).values()) == {0} and len(Table.read(out / "catalog.ecsv")) == 20  # old set intact
    assert sim.simulate_to_disk(out, 2, "CANDELS", seed=5, workers=1, fits=True, progress=False, overwrite=True)
    _assert_one_set(out)
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]  # the killed run's staging folder is gone


def test_galaxy_ids_of_simulated_files():
    assert sim.galaxy_id("gal_000042.fits") == 42 and sim.galaxy_id("fits/gal_1234567.fits") == 1234567
    assert sim.galaxy_id("images.npy:7") == 7 and sim.galaxy_id("sim/images.npy:0") == 0
    for other in ("ngc1300.fits", "gal_12.fits.gz", "images.npy", "stack.npy:3", "7", "gal_x.fits"):
        assert sim.galaxy_id(other) is None
    assert sim.FITS_NAME.format(42) == "gal_000042.fits"


def test_full_disk_keeps_the_old_set_and_ends_in_one_line(tmp_path):
    out = tmp_path / "set"
    args = ["simulate", "--survey", "CANDELS", "--output", out, "--quiet", "--workers", "1"]
    assert cli.main([*map(str, args), "-n", "3", "--seed", "0", "--fits"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run_gamornet([*args, "-n", "50", "--seed", "1", "--fits", "--overwrite"], REPO,
                          file_size_limit=100_000)  # the new images.npy needs 1.4 MB: as if the disk were full
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"gamornet simulate: error: cannot write {out / 'images.npy'}: File too large"]
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
