"""make_gallery and `gamornet gallery`: sections and counts, sampling, stretch, escaping, images matched by id.

Each image of the stacks here holds one 2 x 2 block of light on a zero background, at a place that encodes its
index (and a brightness that varies with it), so a thumbnail decoded from the page tells which image it shows.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import warnings
from html.parser import HTMLParser

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.visualization import AsinhStretch, PercentileInterval
from PIL import Image

from gamornet.cli import main
from gamornet.gallery import make_gallery

SIZE = 24  # 12 x 12 places for a 2 x 2 block: 144 distinct images; the blocks are 0.7% of the pixels
CLASSES = ("disk", "indeterminate", "bulge")
MALICIOUS = "<img src=x onerror=alert(1)>"


def encoded_image(index: int) -> np.ndarray:
    image = np.zeros((SIZE, SIZE), np.float32)
    row, col = divmod(index, SIZE // 2)
    image[2 * row:2 * row + 2, 2 * col:2 * col + 2] = 1.0 + index % 7
    return image


def decoded_index(pixels: np.ndarray) -> int:
    """Index of the image a thumbnail shows (thumbnails show the first row at the bottom)."""
    row, col = np.unravel_index(np.argmax(np.flipud(pixels)), pixels.shape)
    return int(row // 2 * (SIZE // 2) + col // 2)


def write_stack(path, n: int) -> str:
    np.save(path, np.stack([encoded_image(i) for i in range(n)])[..., np.newaxis])
    return str(path)


def policy_labels(p: np.ndarray) -> np.ndarray:
    """keras_sdss, written out: bulge if P_bulge >= 0.7, else disk if P_disk >= 0.7, else indeterminate."""
    return np.where(p[:, 2] >= 0.7, "bulge", np.where(p[:, 0] >= 0.7, "disk", "indeterminate"))


def prediction_table(n: int, seed: int = 0, label: bool = True, prefix: str = "stack.npy:") -> Table:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([0.6, 0.6, 0.6], n)
    table = Table({"id": np.char.add(prefix, np.arange(n).astype(str)), "p_disk": p[:, 0], "p_indeterminate": p[:, 1],
                   "p_bulge": p[:, 2]}, meta={"model": "SDSS_tl", "policy": "keras_sdss"})
    if label:
        table["label"] = policy_labels(p)
    return table


class Page(HTMLParser):
    """Sections (id -> data-count, data-shown), the cards of each, and every card's image."""

    def __init__(self, text: str):
        super().__init__()
        self.counts, self.shown, self.cards, self.images, self._open = {}, {}, {}, {}, []
        self._card = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("class") in ("gallery-section", "gallery-subsection"):
            self.counts[a["id"]], self.shown[a["id"]] = int(a["data-count"]), int(a["data-shown"])
            self.cards[a["id"]] = []
            self._open.append((tag, a["id"]))
        elif tag in ("section", "div") and self._open:
            self._open.append((tag, None))
        if tag == "figure" and a.get("class") == "thumb":
            self._card = a["data-id"]
            self.cards[next(k for _, k in reversed(self._open) if k)].append(self._card)
        if tag == "img" and self._card is not None:
            data = a["src"].removeprefix("data:image/png;base64,")
            self.images[self._card] = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))

    def handle_endtag(self, tag):
        if tag == "figure":
            self._card = None
        if tag in ("section", "div") and self._open and self._open[-1][0] == tag:
            self._open.pop()


@pytest.fixture
def stack(tmp_path):
    return write_stack(tmp_path / "stack.npy", 120)


def test_sections_hold_the_counts_of_the_table_and_at_most_per_class(tmp_path, stack):
    table = prediction_table(120)
    truth = Table({"id": table["id"], "label": np.random.default_rng(9).choice(CLASSES, 120)})
    out = make_gallery(table, stack, tmp_path / "g.html", catalog=truth, per_class=5, progress=False)
    page = Page(out.read_text())
    labels, true = np.asarray(table["label"]), np.asarray(truth["label"])
    for name in CLASSES:
        assert page.counts[name] == np.sum(labels == name) > 0
        for true_name in CLASSES:
            if true_name != name:
                key = f"mistakes-{true_name}-as-{name}"
                assert page.counts[key] == np.sum((true == true_name) & (labels == name))
    assert page.counts["mistakes"] == np.sum(true != labels)
    for key, count in page.counts.items():
        if key != "mistakes":
            assert page.shown[key] == len(page.cards[key]) == min(count, 5)
    cards = page.cards["disk"]  # most confident first
    p_disk = {str(i): p for i, p in zip(table["id"], table["p_disk"])}
    assert [p_disk[c] for c in cards] == sorted((p_disk[c] for c in cards), reverse=True)
    assert '<td id="summary-rows">120</td>' in out.read_text()


def test_labels_from_the_policy_and_truth_from_bt(tmp_path, stack):
    table = prediction_table(120, seed=3, label=False)
    bt = np.random.default_rng(4).uniform(0, 1, 120)
    table.write(tmp_path / "p.ecsv")
    Table({"id": table["id"], "bt": bt}).write(tmp_path / "truth.fits")
    out = make_gallery(tmp_path / "p.ecsv", stack, tmp_path / "g.html", catalog=tmp_path / "truth.fits",
                       sections=["bulge", "mistakes"], progress=False)
    page = Page(out.read_text())
    p = np.stack([table[c] for c in ("p_disk", "p_indeterminate", "p_bulge")], axis=1)
    labels = policy_labels(p)
    true = np.where(bt < 0.45, "disk", np.where(bt > 0.55, "bulge", "indeterminate"))
    assert set(page.counts) == {"bulge", "mistakes", *(f"mistakes-{t}-as-{x}" for t in CLASSES for x in CLASSES
                                                         if t != x)}
    assert page.counts["bulge"] == np.sum(labels == "bulge")
    assert page.counts["mistakes-disk-as-bulge"] == np.sum((true == "disk") & (labels == "bulge"))
    assert page.counts["mistakes-bulge-as-indeterminate"] == np.sum((true == "bulge") & (labels == "indeterminate"))


def test_borderline_rows_are_those_near_a_threshold(tmp_path, stack):
    table = prediction_table(120, seed=5)
    page = Page(make_gallery(table, stack, tmp_path / "g.html", sections=["borderline"], per_class=200,
                             progress=False).read_text())
    near = (np.abs(table["p_disk"] - 0.7) <= 0.05) | (np.abs(table["p_bulge"] - 0.7) <= 0.05)
    assert page.counts["borderline"] == np.sum(near) == len(page.cards["borderline"]) > 0
    assert set(page.cards["borderline"]) == set(np.asarray(table["id"])[near])


def test_sampling_follows_the_seed(tmp_path, stack):
    table = prediction_table(120)
    pages = [make_gallery(table, stack, tmp_path / f"{name}.html", per_class=4, seed=seed, progress=False)
             for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    a, b, c = (Page(page.read_text()) for page in pages)
    assert pages[0].read_bytes() == pages[1].read_bytes()
    assert a.cards["indeterminate"] != c.cards["indeterminate"]
    assert a.counts == c.counts


def test_images_are_matched_by_id_and_share_one_stated_stretch(tmp_path, stack):
    table = prediction_table(120)[np.random.default_rng(2).permutation(120)]  # rows in another order than images
    text = make_gallery(table, stack, tmp_path / "g.html", per_class=10, progress=False).read_text()
    page = Page(text)
    assert len(page.images) >= 20
    shown = [int(image_id.split(":")[1]) for image_id in page.images]
    for image_id, pixels in page.images.items():
        assert decoded_index(pixels) == int(image_id.split(":")[1])
    vmin, vmax = PercentileInterval(99.5).get_limits(np.concatenate([encoded_image(i).ravel() for i in shown]))
    stated = re.search(r"asinh stretch \(astropy.visualization.AsinhStretch\) of \[([^,]+), ([^\]]+)\]", text)
    assert float(stated.group(1)) == pytest.approx(vmin, abs=1e-6)
    assert float(stated.group(2)) == pytest.approx(vmax, rel=1e-5)
    for index, pixels in zip(shown, page.images.values()):  # every block at the level the common stretch gives
        level = AsinhStretch()(np.array([(1.0 + index % 7 - vmin) / (vmax - vmin)]), clip=True)[0] * 255
        assert abs(int(pixels.max()) - float(level)) <= 1
    assert len({int(p.max()) for p in page.images.values()}) > 2  # levels differ: not one stretch per image


def test_array_and_fits_inputs_are_matched_as_prediction_ids_them(tmp_path):
    array = np.stack([encoded_image(i) for i in range(30)])
    table = prediction_table(30, prefix="")
    table["id"] = np.arange(30)[::-1]  # integer ids, as prediction gives the rows of an array
    page = Page(make_gallery(table, array, tmp_path / "a.html", per_class=3, progress=False).read_text())
    assert page.images and all(decoded_index(p) == int(i) for i, p in page.images.items())
    folder = tmp_path / "fits"
    folder.mkdir()
    for i in range(12):
        fits.writeto(folder / f"gal_{i:03d}.fits", encoded_image(i))
    table = prediction_table(12, prefix="gal_")
    table["id"] = [f"gal_{i:03d}.fits" for i in range(12)]
    page = Page(make_gallery(table, str(folder / "*.fits"), tmp_path / "f.html", per_class=2,
                             progress=False).read_text())
    assert page.images and all(decoded_index(p) == int(i[4:7]) for i, p in page.images.items())


def test_text_from_tables_is_escaped(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(("a", "b", MALICIOUS)):
        np.save(folder / f"{name}.npy", encoded_image(i))
    table = prediction_table(3)
    table["id"] = ["a.npy", "b.npy", f"{MALICIOUS}.npy"]
    table["p_disk"], table["p_indeterminate"], table["p_bulge"] = [0.9] * 3, [0.05] * 3, [0.05] * 3
    table["label"] = "disk"
    table.meta["model"] = "<script>alert(2)</script>"
    text = make_gallery(table, str(folder), tmp_path / "g.html", title="<b>t</b>", progress=False).read_text()
    assert MALICIOUS not in text and "<script>" not in text and "<b>t</b>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;script&gt;" in text
    assert len(Page(text).images) == 3


def test_png_figure(tmp_path, stack):
    make_gallery(prediction_table(120), stack, tmp_path / "g.html", png=tmp_path / "g.png", per_class=3,
                 progress=False)
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(tmp_path / "g.png").size[1] > 300


@pytest.mark.parametrize("change, message", [
    ({"sections": ["disk", "spirals"]}, "`sections`"),
    ({"sections": ["mistakes"]}, "'mistakes' needs true labels"),
    ({"per_class": 0}, "`per_class` must be an integer >= 1. Received: per_class=0"),
    ({"seed": -1}, "`seed`"),
    ({"interval": "minmax"}, "`interval`"),
])
def test_bad_arguments_are_named_before_any_work(tmp_path, stack, change, message):
    kwargs = {"images": stack, "output": tmp_path / "g.html", "progress": False, **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        make_gallery(tmp_path / "no-such-table.ecsv", **kwargs)  # arguments are checked before the table is read
    assert not (tmp_path / "g.html").exists()


def test_missing_columns_and_ids_are_named(tmp_path, stack):
    table = prediction_table(120)
    with pytest.raises(ValueError, match=r"`predictions` needs the columns.*missing \['p_bulge'\]"):
        make_gallery(table[["id", "p_disk", "p_indeterminate"]], stack, tmp_path / "g.html", progress=False)
    table["id"][7] = "other.npy:7"
    with pytest.raises(ValueError, match=r"`images`: 1 id\(s\) of the table are not among the images.*other.npy:7"):
        make_gallery(table, stack, tmp_path / "g.html", progress=False)
    assert not (tmp_path / "g.html").exists()


def test_cli_end_to_end_and_evaluate_with_images(tmp_path, stack, capsys):
    table = prediction_table(120)
    table.write(tmp_path / "p.ecsv")
    Table({"id": table["id"], "label": np.random.default_rng(1).choice(CLASSES, 120)}).write(tmp_path / "t.ecsv")
    args = ["gallery", str(tmp_path / "p.ecsv"), "--images", stack, "--catalog", str(tmp_path / "t.ecsv"),
            "--per-class", "3", "--seed", "4", "--png", str(tmp_path / "g.png"), "--quiet",
            "--output", str(tmp_path / "g.html")]
    assert main(args) == 0
    page = Page((tmp_path / "g.html").read_text())
    assert page.counts["disk"] == np.sum(table["label"] == "disk")
    assert max(shown for key, shown in page.shown.items() if key != "mistakes") == 3
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        main(["gallery", str(tmp_path / "p.ecsv"), "--images", stack, "--per-class", "0"])
    assert "per_class" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "p.ecsv"), str(tmp_path / "t.ecsv"), "--output", str(tmp_path / "ev"),
                 "--images", stack]) == 0
    assert "gallery.html" in capsys.readouterr().out
    page = Page((tmp_path / "ev" / "gallery.html").read_text())
    assert page.counts["mistakes"] == np.sum(table["label"] != Table.read(tmp_path / "t.ecsv")["label"])


def test_catalog_route_cuts_the_shown_rows_again(tmp_path):
    """A table of the catalogue route shows the same thumbnails as the cutout folder of that catalogue."""

    from gamornet.cutouts import make_cutouts

    from helpers import field, sky_offsets, tan_wcs, write_tile

    wcs = tan_wcs(150.0, 2.0, 0.25, (160, 160))
    offsets = np.array([(-10.0, -8.0), (9.0, -7.5), (0.5, 0.3), (-7.0, 9.0), (8.0, 8.5), (2.0, -3.0)])
    coords = sky_offsets(offsets, 150.0, 2.0)
    image = field(wcs, (160, 160), coords, 0.25) + np.random.default_rng(1).normal(0, 0.05, (160, 160))
    tile = write_tile(tmp_path / "tile.fits", wcs, image)
    Table({"objid": [f"g{i}" for i in range(6)], "RA": coords.ra.deg, "DEC": coords.dec.deg}).write(
        tmp_path / "cat.ecsv")
    make_cutouts(str(tmp_path / "cat.ecsv"), tile, tmp_path / "cut", pixel_scale=0.4, size=21, progress=False)
    table = prediction_table(6, prefix="g")
    table.meta.update(pixel_scale=0.4, size=21, columns={"ra": "RA", "dec": "DEC", "id": "objid"})
    table["RA"], table["DEC"] = coords.ra.deg, coords.dec.deg
    route = make_gallery(table, output=tmp_path / "route.html", catalog_images=(tmp_path / "cat.ecsv", [tile]),
                         progress=False)
    table["id"] = [f"images.npy:{i}" for i in range(6)]
    folder = make_gallery(table, tmp_path / "cut", tmp_path / "folder.html", progress=False)
    cut, route_page = Page(folder.read_text()).images, Page(route.read_text()).images
    assert len(route_page) == 6
    assert f"RA {coords.ra.deg[2]:.6f} Dec {coords.dec.deg[2]:.6f}" in route.read_text()
    for i in range(6):
        np.testing.assert_array_equal(route_page[f"g{i}"], cut[f"images.npy:{i}"])


def _big_page(tmp_path, n: int) -> int:
    images = np.lib.format.open_memmap(tmp_path / f"s{n}.npy", mode="w+", dtype=np.float32, shape=(n, 8, 8))
    images[::997] = np.arange(64, dtype=np.float32).reshape(8, 8)  # a few non-zero images; the rest is sparse
    del images
    table = prediction_table(n, prefix=f"s{n}.npy:")
    table.write(tmp_path / f"p{n}.parquet")
    out = make_gallery(tmp_path / f"p{n}.parquet", tmp_path / f"s{n}.npy", tmp_path / f"g{n}.html", progress=False)
    return os.path.getsize(out)


@pytest.mark.parametrize("n", [10**5, pytest.param(10**6, marks=pytest.mark.slow)])
def test_page_size_is_bounded_by_the_sections_not_the_table(tmp_path, n):
    """A table of n rows (its images a sparse memory-mapped stack) gives a page as small as one of 1000 rows."""
    small, large = _big_page(tmp_path, 1000), _big_page(tmp_path, n)
    assert large <= 1.2 * small


@pytest.mark.slow
def test_page_in_a_headless_browser_offline(tmp_path, stack):
    """Chromium opens the page from file:// with the network off: every image decodes, counts read, no alert."""
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        message = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(40):
        np.save(folder / (f"{MALICIOUS}.npy" if i == 7 else f"gal{i:02d}.npy"), encoded_image(i))
    table = prediction_table(40, seed=8)
    table["id"] = [f"{MALICIOUS}.npy" if i == 7 else f"gal{i:02d}.npy" for i in range(40)]
    truth = Table({"id": table["id"], "label": np.random.default_rng(3).choice(CLASSES, 40)})
    out = make_gallery(table, str(folder), tmp_path / "g.html", catalog=truth, per_class=40, progress=False)
    expected = Page(out.read_text())

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                    "downloadThroughput": 0, "uploadThroughput": 0})
        driver.get(out.as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == sum(n for key, n in expected.shown.items() if key != "mistakes") > 40
        assert all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im) == SIZE
                   for im in images)
        for element in driver.find_elements(By.CSS_SELECTOR, ".gallery-section, .gallery-subsection"):
            key = element.get_attribute("id")
            assert int(element.get_attribute("data-count")) == expected.counts[key]
            heading = element.find_element(By.CSS_SELECTOR, "h2, h3").text
            assert f"({expected.counts[key]} galax" in heading
        labels = np.asarray(table["label"])
        for name in CLASSES:
            cards = driver.find_elements(By.CSS_SELECTOR, f"#{name} figure.thumb")
            assert len(cards) == np.sum(labels == name)
        assert MALICIOUS in driver.find_element(By.TAG_NAME, "body").text  # shown as text
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.accept()
        assert driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        driver.quit()
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _formats(tmp_path, table: Table) -> dict:
    """``table`` as a .parquet file of small row groups, a FITS file and an .ecsv file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {ending: tmp_path / f"p{ending}" for ending in (".parquet", ".fits", ".ecsv")}
    columns = {name: (np.asarray(table[name]) if not isinstance(table[name], np.ma.MaskedArray)
                      else pa.array(np.ma.getdata(table[name]), mask=np.ma.getmaskarray(table[name])))
               for name in table.colnames}
    pq.write_table(pa.table(columns), paths[".parquet"], row_group_size=17)
    table.write(paths[".fits"])
    table.write(paths[".ecsv"])
    return paths


@pytest.mark.parametrize("ending", [".parquet", ".fits", ".ecsv", "table"])
def test_page_is_the_same_whatever_the_batches(tmp_path, stack, monkeypatch, ending):
    """Batches of 7 rows and of 4096 rows give byte-identical pages; every format gives the same sections."""
    import gamornet.gallery.make as make

    table = prediction_table(120, seed=6, label=False)
    table["p_disk"] = np.ma.MaskedArray(table["p_disk"], mask=np.arange(120) % 11 == 3)  # catalogue rows not predicted
    table["ra"], table["dec"] = np.linspace(10, 20, 120), np.linspace(-5, 5, 120)
    truth = Table({"id": table["id"], "label": np.random.default_rng(5).choice(CLASSES, 120)})
    source = table if ending == "table" else _formats(tmp_path, table)[ending]
    pages = []
    for batch_rows in (7, 4096):
        monkeypatch.setattr(make, "BATCH_ROWS", batch_rows)
        pages.append(make_gallery(source, stack, tmp_path / f"g{batch_rows}.html", catalog=truth, per_class=4,
                                  seed=3, title="t", progress=False).read_bytes())
    assert pages[0] == pages[1]
    text = pages[0].decode()
    page = Page(text)
    assert '<td id="summary-not-predicted">11 (masked probabilities; not shown)</td>' in text
    labels = policy_labels(np.stack([np.ma.getdata(table[c]) for c in ("p_disk", "p_indeterminate", "p_bulge")], 1))
    predicted = np.arange(120) % 11 != 3
    for name in CLASSES:
        assert page.counts[name] == np.sum(labels[predicted] == name)
    assert page.counts["mistakes"] == np.sum((labels != np.asarray(truth["label"]))[predicted])
    assert not {f"stack.npy:{i}" for i in range(3, 120, 11)} & set(page.images)
    row = int(next(iter(page.images)).split(":")[1])
    assert f"RA {table['ra'][row]:.6f} Dec {table['dec'][row]:.6f}" in text
    monkeypatch.setattr(make, "BATCH_ROWS", 4096)
    reference = Page(make_gallery(table, stack, tmp_path / "ref.html", catalog=truth, per_class=4, seed=3,
                                  progress=False).read_text())
    assert page.cards == reference.cards and page.counts == reference.counts


def test_sample_depends_on_the_ids_not_the_row_order(tmp_path, stack):
    table = prediction_table(120, seed=2)
    shuffled = table[np.random.default_rng(0).permutation(120)]
    a, b = (Page(make_gallery(t, stack, tmp_path / f"{i}.html", per_class=5, seed=9, progress=False).read_text())
            for i, t in enumerate((table, shuffled)))
    assert a.cards == b.cards and a.counts == b.counts
    assert all(len(cards) == 5 for key, cards in a.cards.items())


def test_images_of_a_stack_are_named_without_listing_them(tmp_path):
    """list_sources and image_ref name every image as list_images does; table ids are found by text."""
    from gamornet.gallery.thumbnails import ImageIndex
    from gamornet.predict.inputs import id_prefix, image_ref, list_images, list_sources

    write_stack(tmp_path / "a.npy", 12)
    np.save(tmp_path / "one.npy", encoded_image(3))
    fits.writeto(tmp_path / "b.fits", encoded_image(4))
    sources, _ = list_sources(str(tmp_path))
    refs, _ = list_images(str(tmp_path))
    assert [r.id for r in refs] == [image_ref(s, i).id for s in sources for i in range(s.n_images)]
    assert [id_prefix(s) for s in sources] == ["a.npy:", None, None]
    index = ImageIndex(sources=sources)
    ids = ["a.npy:0", "a.npy:11", "a.npy:12", "a.npy:07", "a.npy:-1", "a.npy:", "one.npy", "b.fits", "c.fits", "a.npy"]
    assert index.find(ids).tolist() == [True, True, False, False, False, False, True, True, False, False]
    assert index.ref("a.npy:11").index == 11 and index.ref("b.fits").source.kind == "fits"
    array = ImageIndex(sources=list_sources(np.zeros((5, 4, 4), np.float32))[0])
    assert array.find(np.array([0, 4, 5])).tolist() == [True, True, False] and array.ref("4").id == 4


def test_truth_of_a_simulated_set_is_matched_by_galaxy_id(tmp_path):
    """Ids images.npy:N match catalogue id N; an id the catalogue lacks is named before the page is written."""
    folder = tmp_path / "sim"
    folder.mkdir()
    write_stack(folder / "images.npy", 60)
    table = prediction_table(60, prefix="images.npy:")
    truth = Table({"id": np.arange(60), "bt": np.random.default_rng(1).uniform(0, 1, 60)})
    page = Page(make_gallery(table, folder, tmp_path / "g.html", catalog=truth, progress=False).read_text())
    true = np.where(truth["bt"] < 0.45, "disk", np.where(truth["bt"] > 0.55, "bulge", "indeterminate"))
    assert page.counts["mistakes"] == np.sum(true != np.asarray(table["label"]))
    with pytest.raises(ValueError, match=r"PREDICTIONS ids missing from CATALOG. Received: 1 such ids"):
        make_gallery(table, folder, tmp_path / "h.html", catalog=truth[1:], progress=False)
    assert not (tmp_path / "h.html").exists()


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_table(tmp_path):
    """Pages of 10^5 and 10^6 rows (.parquet, sparse .npy stack), each made in a fresh process: peak memory alike."""
    from benchmarks.gallery import measure, write_inputs

    peaks = {}
    for rows in (10**5, 10**6):
        table, images = write_inputs(str(tmp_path / str(rows)), rows, size=8)
        peaks[rows] = measure(table, images, str(tmp_path / f"{rows}.html"))["peak_rss_mb"]
    assert peaks[10**6] <= 1.5 * peaks[10**5], peaks


# ---------------------------------------------------------------- the inputs a predicted table records


@pytest.fixture(scope="module")
def narrow_model(tmp_path_factory) -> str:
    from helpers import NARROW_WIDTHS, SMALL_SHAPE, saved_keras_model

    return saved_keras_model(tmp_path_factory.mktemp("model"), SMALL_SHAPE, seed=1, widths=NARROW_WIDTHS)


def _predict(inputs, model: str, output, **kwargs) -> Table:
    from gamornet.predict import predict_files

    return predict_files(inputs, model, input_shape=(32, 32, 1), output=str(output), engine="keras", batch_size=8,
                         progress=False, **kwargs)


def _inputs(folder) -> tuple[str, str]:
    """A .npy stack of 12 images and a folder of 6 FITS images, 32 x 32, each a block of light at its own place."""
    images = np.zeros((18, 32, 32), np.float32)
    images[:, 4:28, 4:28] = [encoded_image(i) for i in range(18)]
    os.makedirs(folder / "fits")
    np.save(folder / "stack.npy", images[:12, :, :, np.newaxis])
    for i in range(12, 18):
        fits.writeto(folder / "fits" / f"g{i}.fits", images[i])
    return str(folder / "stack.npy"), str(folder / "fits")


def test_gallery_from_the_inputs_a_predicted_table_records(tmp_path, narrow_model, monkeypatch, capsys):
    """A table from gamornet predict (a stack, a FITS folder) gives the page made with its images given."""
    stack, folder = _inputs(tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")  # predicted from relative paths; the gallery made from elsewhere
    _predict("stack.npy", narrow_model, tmp_path / "stack.ecsv")
    _predict("fits", narrow_model, tmp_path / "folder.fits")
    monkeypatch.chdir(tmp_path)
    for table, images in (("stack.ecsv", stack), ("folder.fits", folder)):
        alone = make_gallery(table, output=f"alone_{table}.html", per_class=4, progress=False).read_text()
        given = make_gallery(table, images, f"given_{table}.html", per_class=4, progress=False).read_text()
        assert alone == given and len(Page(alone).images) >= 4, table
        assert main(["gallery", table, "--per-class", "4", "--quiet", "--output", f"cli_{table}.html"]) == 0
        assert (tmp_path / f"cli_{table}.html").read_text() == given
    os.rename(tmp_path / "in" / "fits", tmp_path / "moved")
    message = f"`images` is required: the recorded input {folder!r} no longer exists. Pass the images"
    with pytest.raises(ValueError, match=re.escape(message)):
        make_gallery("folder.fits", output="moved.html", progress=False)
    assert main(["gallery", "folder.fits", "--output", "moved.html"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "moved.html").exists()
    assert main(["gallery", "folder.fits", "--images", "moved", "--quiet", "--output", "moved.html"]) == 0
    _predict(np.load(stack), narrow_model, tmp_path / "array.ecsv")  # an array: nothing to record
    with pytest.raises(ValueError, match=r"`images` is required: the table records no inputs \(an array"):
        make_gallery("array.ecsv", output="array.html", progress=False)
    assert main(["gallery", "folder.fits", "--source-catalog", "cat.ecsv"]) == 2
    assert "--source-catalog needs --images" in capsys.readouterr().err


def test_gallery_of_a_catalogue_route_table_alone(tmp_path, narrow_model):
    """A table predicted from a catalogue and a tile gives the page made with catalog_images given."""
    from gamornet.predict import predict_files

    from helpers import field, sky_offsets, tan_wcs, write_tile

    wcs = tan_wcs(150.0, 2.0, 0.25, (160, 160))
    coords = sky_offsets(np.array([(-10.0, -8.0), (9.0, -7.5), (0.5, 0.3), (-7.0, 9.0), (8.0, 8.5)]), 150.0, 2.0)
    image = field(wcs, (160, 160), coords, 0.25) + np.random.default_rng(1).normal(0, 0.05, (160, 160))
    tile = write_tile(tmp_path / "tile.fits", wcs, image)
    catalog = str(tmp_path / "cat.ecsv")
    Table({"objid": [f"g{i}" for i in range(5)], "RA": coords.ra.deg, "DEC": coords.dec.deg}).write(catalog)
    for ending in (".ecsv", ".fits"):  # FITS: upper-case keys, the catalogue's columns found by name
        table = tmp_path / f"route{ending}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tile's header records no FILTER or BUNIT
            predict_files(catalog=catalog, images=[tile], model=narrow_model, pixel_scale=0.4, size=32,
                          output=str(table), engine="keras", progress=False)
        alone = make_gallery(table, output=tmp_path / "alone.html", progress=False).read_text()
        given = make_gallery(table, output=tmp_path / "given.html", catalog_images=(catalog, [tile]),
                             progress=False).read_text()
        assert alone == given and len(Page(alone).images) == 5, ending
    os.rename(tile, tmp_path / "moved.fits")
    with pytest.raises(ValueError, match=re.escape(f"the recorded input {tile!r} no longer exists")):
        make_gallery(tmp_path / "route.ecsv", output=tmp_path / "moved.html", progress=False)


def test_evaluate_writes_the_gallery_of_the_recorded_inputs(tmp_path, narrow_model, capsys):
    stack, _ = _inputs(tmp_path / "in")
    table = _predict(stack, narrow_model, tmp_path / "p.parquet")
    truth = tmp_path / "truth.ecsv"
    Table({"id": table["id"], "label": np.random.default_rng(1).choice(CLASSES, len(table))}).write(truth)
    args = ["evaluate", str(tmp_path / "p.parquet"), str(truth), "--output"]
    assert main([*args, str(tmp_path / "ev")]) == 0
    out, err = capsys.readouterr()
    assert str(tmp_path / "ev" / "gallery.html") in out and "gallery not written" not in err
    page = make_gallery(tmp_path / "p.parquet", stack, tmp_path / "given.html", catalog=truth, progress=False)
    assert (tmp_path / "ev" / "gallery.html").read_text() == page.read_text()
    assert main([*args, str(tmp_path / "off"), "--no-gallery"]) == 0
    assert not (tmp_path / "off" / "gallery.html").exists() and (tmp_path / "off" / "summary.json").exists()
    capsys.readouterr()
    os.makedirs(tmp_path / "elsewhere")
    os.rename(stack, tmp_path / "elsewhere" / "stack.npy")
    assert main([*args, str(tmp_path / "moved")]) == 0  # the report without its gallery, and a note
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"gamornet evaluate: note: gallery not written: the recorded input {stack!r} no "
                                "longer exists; pass --images"]
    assert (tmp_path / "moved" / "summary.json").exists() and not (tmp_path / "moved" / "gallery.html").exists()
    assert "gallery.html" not in out
    np.save(stack, np.zeros((3, 32, 32, 1), np.float32))  # another stack where the table's was: its ids are absent
    assert main([*args, str(tmp_path / "other")]) == 0
    assert capsys.readouterr().err.startswith("gamornet evaluate: note: gallery not written: from the images "
                                              "PREDICTIONS record, `images`: 9 id(s) of the table are not among")
    assert main([*args, str(tmp_path / "given"), "--images", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "given" / "gallery.html").exists()
