"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

#: The checkout the tests run from (the root of the repository).
REPO = Path(__file__).resolve().parents[1]

#: CPU flags that decide which oneDNN kernels run (and so the order of float32 sums).
CPU_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")

#: Largest difference between probabilities computed by two float32 evaluation orders of the
#: same network on the same images (another batch size, another CPU's kernels, another Keras
#: backend).  Rounding alone separates them: every convolution and dense layer sums up to
#: ~10^4 products, each sum carries a relative error of order sqrt(K) * 2**-24 ~ 6e-6 when the
#: order changes, these errors pass through the layers, and the softmax hands at most half of a
#: logit's error to a probability.  Results of one evaluation order are compared exactly.
ORDER_ATOL = 1e-5


def cpu_description() -> str:
    """Model name and the flags of :data:`CPU_FLAGS` this CPU has (Linux; the machine name elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf8") as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    have = set(fields.get("flags", "").split())
    flags = [flag for flag in CPU_FLAGS if flag in have] or ["none of " + ", ".join(CPU_FLAGS)]
    return f"{fields.get('model name', platform.machine())}; {' '.join(flags)}"


#: Input shape used by most tests: small enough to train in seconds.
SMALL_SHAPE = (32, 32, 1)

#: Widths (filters of the 5 convolutions, units of the 2 hidden dense layers) of the narrow network of the
#: tests where the width does not matter (chunks, locks, resume, augmentation, command line, file formats):
#: ~5e4 parameters instead of the ~2e7 the published widths give at SMALL_SHAPE, most of them in the 4096-wide
#: dense layers.  The network description tests, published models, parity and conversion keep the full width.
NARROW_WIDTHS = (16, 32, 32, 32, 32, 64, 64)


def make_data(n: int, shape=SMALL_SHAPE, seed: int = 0):
    """Random images (float32) and one-hot labels of all three classes."""
    rng = np.random.default_rng(seed)
    images = rng.normal(10.0, 3.0, size=(n, *shape)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[np.arange(n) % 3]
    return images, labels


def _keras2_lrn_classes(tf, tf_keras):
    class SpatialLRN(tf_keras.layers.Layer):
        """The Keras-flavour LRN as Keras 2 code wrote it: no get_config, constants in the class."""

        def call(self, x):
            pooled = tf.nn.avg_pool2d(tf.square(x), ksize=5, strides=1, padding="SAME")
            summed = tf.reduce_sum(pooled, axis=-1, keepdims=True)
            return x / tf.pow(1.0 + 1e-4 * summed, 0.75)

    class DepthLRN(tf_keras.layers.Layer):
        def call(self, x):
            return tf.nn.local_response_normalization(x, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75)

    SpatialLRN.__name__ = DepthLRN.__name__ = "LocalResponseNormalization"
    return {"keras": SpatialLRN, "tflearn": DepthLRN}


def saved_keras_model(directory, shape=SMALL_SHAPE, seed: int = 0, widths=None) -> str:
    """A randomly initialised GaMorNet (of ``widths``, default the published ones) saved as ``directory/tiny.keras``.

    Returns its path.
    """
    from gamornet.keras_backend.model import build_keras_model

    path = Path(directory) / "tiny.keras"
    build_keras_model(shape, seed=seed, widths=widths).save(path)
    return str(path)


def narrow_network(monkeypatch) -> None:
    """Networks built in this process without explicit widths get :data:`NARROW_WIDTHS` (training from scratch).

    Models read from files keep their own widths.
    """
    from gamornet.core.network import network_layers
    from gamornet.keras_backend import model

    monkeypatch.setattr(model, "network_layers", lambda widths=None: network_layers(
        NARROW_WIDTHS if widths is None else widths))


def keras2_model(lrn: str, shape=SMALL_SHAPE):
    """GaMorNet as a Keras 2 (tf-keras) Sequential model with default layer names and random weights.

    Built from :data:`gamornet.core.network.LAYERS`, with the LRN written as Keras 2
    code wrote it (plain TensorFlow ops, no ``get_config``).
    """
    import tensorflow as tf
    import tf_keras

    from gamornet.core.network import LAYERS

    lrn_class = _keras2_lrn_classes(tf, tf_keras)[lrn]
    layers = tf_keras.layers
    model = tf_keras.Sequential()
    model.add(layers.InputLayer(input_shape=shape))
    for spec in LAYERS:
        if spec.kind == "conv":
            model.add(layers.Conv2D(spec.filters, spec.kernel, strides=spec.strides, padding="same",
                                    activation=spec.activation, bias_initializer="random_normal"))
        elif spec.kind == "maxpool":
            model.add(layers.MaxPooling2D(spec.kernel, strides=spec.strides, padding="same"))
        elif spec.kind == "lrn":
            model.add(lrn_class())
        elif spec.kind == "flatten":
            model.add(layers.Flatten())
        elif spec.kind == "dense":
            model.add(layers.Dense(spec.units, activation=spec.activation, bias_initializer="random_normal",
                                   kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.05)))
        elif spec.kind == "dropout":
            model.add(layers.Dropout(spec.rate))
    return model


def run_gamornet(args, cwd, file_size_limit: int | None = None, **kwargs):
    """Run ``python -m gamornet ARGS`` in a child process started in ``cwd``.

    With ``file_size_limit`` (bytes), writing beyond it fails with EFBIG
    ("File too large"), as a full disk would, even for root (``RLIMIT_FSIZE``,
    with SIGXFSZ ignored).
    """
    import signal
    import subprocess
    import sys

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "gamornet", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, preexec_fn=limit if file_size_limit is not None else None, **kwargs)


def build_plain_tflearn_network(shape):
    """GaMorNet written out with TFLearn's layer functions and default names, as TFLearn users write it.

    Must be called inside a graph context (``gamornet.tflearn_backend.compat.building_graph``).
    """
    from gamornet.tflearn_backend.compat import import_tflearn

    tflearn = import_tflearn()
    net = tflearn.input_data(shape=[None, *shape])
    net = tflearn.conv_2d(net, 96, 11, strides=4, activation="relu")
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.conv_2d(net, 256, 5, activation="relu")
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.conv_2d(net, 384, 3, activation="relu")
    net = tflearn.conv_2d(net, 384, 3, activation="relu")
    net = tflearn.conv_2d(net, 256, 3, activation="relu")
    net = tflearn.max_pool_2d(net, 3, strides=2)
    net = tflearn.local_response_normalization(net)
    net = tflearn.fully_connected(net, 4096, activation="tanh")
    net = tflearn.dropout(net, 0.5)
    net = tflearn.fully_connected(net, 4096, activation="tanh")
    net = tflearn.dropout(net, 0.5)
    net = tflearn.fully_connected(net, 3, activation="softmax")
    momentum = tflearn.Momentum(learning_rate=0.01, momentum=0.9)
    return tflearn.regression(net, optimizer=momentum, loss="categorical_crossentropy")


def plain_tflearn_model(shape, tmp_dir):
    """(graph, tflearn.DNN) of the plain network, in a graph of its own."""
    from gamornet.tflearn_backend.compat import building_graph, import_tflearn

    tflearn = import_tflearn()
    with building_graph() as graph:
        net = build_plain_tflearn_network(shape)
        dnn = tflearn.DNN(net, tensorboard_dir=os.path.join(str(tmp_dir), ""))
    return graph, dnn


def blob_data(n: int, seed: int = 0):
    """Images of a blob of width 2, 4 or 7 px (disk, indeterminate, bulge) plus noise; one-hot labels."""
    rng = np.random.default_rng(seed)
    k = rng.permutation(np.arange(n) % 3)
    yy, xx = np.mgrid[: SMALL_SHAPE[0], : SMALL_SHAPE[1]]
    r2 = (yy - 15.5) ** 2 + (xx - 15.5) ** 2
    width = np.array([2.0, 4.0, 7.0])[k]
    images = 5.0 * np.exp(-r2[None] / (2 * width[:, None, None] ** 2)) + rng.normal(0, 0.3, (n, *SMALL_SHAPE[:2]))
    return images[..., None].astype(np.float32), np.eye(3, dtype=np.float32)[k]


def read_metrics(directory) -> list[dict]:
    """The rows of a training run's ``metrics.csv``."""
    import csv

    with open(os.path.join(directory, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def column(rows, key) -> list[float]:
    """One column of :func:`read_metrics` rows, as floats."""
    return [float(r[key]) for r in rows]


# ---------------------------------------------------------------- survey fields (cutout tests)

#: Sigma (arcsec) of the Gaussian galaxies of :func:`field`.
SIGMA = 1.2


def tan_wcs(ra, dec, scale, shape, rotation=0.0, crpix=None):
    """A TAN WCS (CD matrix) at ``scale`` arcsec/px, rotated by ``rotation`` degrees (centred by default)."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = crpix if crpix is not None else [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    s, t = scale / 3600, np.radians(rotation)
    wcs.wcs.cd = [[-s * np.cos(t), s * np.sin(t)], [s * np.sin(t), s * np.cos(t)]]
    return wcs


def field(wcs, shape, coords, scale: float, flux: float = 1000.0, sigma: float = SIGMA) -> np.ndarray:
    """Round Gaussians of ``sigma`` arcsec (at ``scale`` arcsec/px) and total ``flux`` at the SkyCoord ``coords``,
    integrated over 9x9 sub-pixels."""
    image = np.zeros(shape)
    sub = (np.arange(9) - 4) / 9
    x, y = wcs.world_to_pixel(coords)
    sigma = sigma / scale
    for xs, ys in zip(np.atleast_1d(x), np.atleast_1d(y)):
        j0, i0 = int(round(xs)), int(round(ys))
        jj, ii = np.meshgrid(np.arange(max(0, j0 - 12 * int(sigma + 1)), min(shape[1], j0 + 12 * int(sigma + 1))),
                             np.arange(max(0, i0 - 12 * int(sigma + 1)), min(shape[0], i0 + 12 * int(sigma + 1))))
        dx = jj[..., None, None] + sub[None, None, :, None] - xs
        dy = ii[..., None, None] + sub[None, None, None, :] - ys
        g = np.exp(-(dx**2 + dy**2) / (2 * sigma**2)).mean(axis=(2, 3)) * flux / (2 * np.pi * sigma**2)
        image[ii, jj] += g
    return image


def write_tile(path, wcs, image, **header) -> str:
    """``image`` (float32) with the header of ``wcs`` (and ``header``) as a FITS file."""
    from astropy.io import fits

    hdr = wcs.to_header()
    hdr.update(header)
    fits.PrimaryHDU(image.astype(np.float32), header=hdr).writeto(path)
    return str(path)


def run_benchmark_quick(module: str, json_path, capsys, timeout: int = 600, env=None) -> tuple[dict, str]:
    """Run ``python -m MODULE --quick --json JSON_PATH`` from the checkout; its figures and printed report.

    The report is shown in pytest's output (the figures of the run are worth reading in CI logs).
    """
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", module, "--quick", "--json", str(json_path)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=timeout)
    with capsys.disabled():
        print("\n" + result.stdout)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(Path(json_path).read_text()), result.stdout


def sky_offsets(offsets, ra0: float, dec0: float):
    """SkyCoord of the points ``offsets`` (arcsec east and north, ``(N, 2)``) from ``(ra0, dec0)`` (degrees)."""
    from astropy.coordinates import SkyCoord

    offsets = np.asarray(offsets, dtype=float)
    return SkyCoord(ra0 + offsets[:, 0] / 3600 / np.cos(np.radians(dec0)), dec0 + offsets[:, 1] / 3600, unit="deg")


def centroid(image, x0=None, y0=None, radius: float = 12, iterations: int = 30) -> tuple[float, float]:
    """Centroid (x, y) of the round source near ``(x0, y0)`` (default the centre), iterated in a circular aperture.

    NaN pixels count as 0.
    """
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    x, y = ((image.shape[1] - 1) / 2 if x0 is None else x0), ((image.shape[0] - 1) / 2 if y0 is None else y0)
    for _ in range(iterations):
        w = np.where(np.hypot(xx - x, yy - y) < radius, np.nan_to_num(image), 0)
        x, y = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    return x, y
