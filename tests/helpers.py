"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import platform

import numpy as np

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


def keras2_model(lrn: str, shape=SMALL_SHAPE):
    """GaMorNet as a Keras 2 (tf-keras) Sequential model with default layer names and random weights.

    Built from :data:`gamornet.network.LAYERS`, with the LRN written as Keras 2
    code wrote it (plain TensorFlow ops, no ``get_config``).
    """
    import tensorflow as tf
    import tf_keras

    from gamornet.network import LAYERS

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
