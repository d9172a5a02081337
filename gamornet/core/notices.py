"""Notices of the command line: what a run could gain, said once and silenced by ``--quiet``.

The figures quoted here are the measurements shown on the performance page
(sections named in :attr:`Bfloat16Figures.section`); they live in this
module only, and a test checks that the page shows the same numbers.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass

from gamornet.core.hardware import cpu_flags, native_bfloat16, nvidia_gpu_visible

__all__ = ["Bfloat16Figures", "BFLOAT16_AMX", "BFLOAT16_AVX512", "bfloat16_figures", "bfloat16_notice",
           "show_bfloat16_notice"]


@dataclass(frozen=True)
class Bfloat16Figures:
    """bfloat16 prediction against TensorFlow float32, as ``python -m benchmarks.engines`` measured it on one CPU.

    Attributes
    ----------
    cpu : str
        The machine measured.
    section : str
        Title of the performance page's section showing these figures.
    openvino, keras : tuple of float
        Speed of OpenVINO bfloat16 and Keras ``mixed_bfloat16`` as a multiple
        of the TensorFlow float32 speed: (CANDELS, SDSS).
    labels_argmax, labels_policies : tuple of float
        Range (lowest, highest) of the percentage of labels OpenVINO bfloat16
        changed: by the most probable class, and under the published
        threshold policies.
    """

    cpu: str
    section: str
    openvino: tuple[float, float]
    keras: tuple[float, float]
    labels_argmax: tuple[float, float]
    labels_policies: tuple[float, float]


#: 2-core Intel Xeon with AMX (flags avx2 avx512f avx512_bf16 avx512_vnni amx_tile amx_bf16), full mode, 5 rounds.
BFLOAT16_AMX = Bfloat16Figures(cpu="a 2-core Intel Xeon with AMX", section="AMX with bfloat16 (Intel Xeon)",
                               openvino=(4.57, 4.28), keras=(2.87, 3.26), labels_argmax=(0.00, 0.39),
                               labels_policies=(0.00, 0.78))
#: 2-core AMD Zen 4 (AVX-512 with avx512_bf16, no AMX).
BFLOAT16_AVX512 = Bfloat16Figures(cpu="a 2-core AMD Zen 4 (AVX-512 BF16, no AMX)",
                                  section="AVX-512 with bfloat16 (AMD Zen 4)", openvino=(2.10, 2.01),
                                  keras=(1.63, 1.76), labels_argmax=(0.00, 0.10), labels_policies=(0.00, 0.10))


def bfloat16_figures(flags=None) -> Bfloat16Figures | None:
    """The figures measured on a CPU like this one (None without native bfloat16).

    Parameters
    ----------
    flags : iterable of str, optional
        CPU flags; by default this CPU's (:func:`gamornet.core.hardware.cpu_flags`).
    """
    have = cpu_flags() if flags is None else frozenset(flags)
    if not native_bfloat16(have):
        return None
    return BFLOAT16_AMX if "amx_bf16" in have else BFLOAT16_AVX512


def _ratios(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.2f}x (CANDELS) / {pair[1]:.2f}x (SDSS)"


def _percent(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.2f}-{pair[1]:.2f}%"


def bfloat16_notice(precision: str = "float32", engine: str = "auto", flavor: str = "keras",
                    flags=None) -> str | None:
    """The note offering ``--precision bfloat16`` to a float32 run on a CPU with native bfloat16, else None.

    Nothing for bfloat16 runs, TFLearn runs (no bfloat16 there), where an
    NVIDIA GPU is visible (the figures are the CPU's) or on CPUs without
    native bfloat16 (where it is slower).
    """
    if precision != "float32" or "tflearn" in (engine, flavor):
        return None
    figures = bfloat16_figures(flags)
    if figures is None or nvidia_gpu_visible():
        return None
    return (f"this CPU computes bfloat16 natively: --precision bfloat16 ran {_ratios(figures.openvino)} the "
            f"TensorFlow float32 speed with OpenVINO ({_ratios(figures.keras)} with Keras) on {figures.cpu}, "
            f"changing {_percent(figures.labels_argmax)} of the labels (argmax), "
            f"{_percent(figures.labels_policies)} under the published policies; float32 (this run) reproduces "
            f"published catalogues. Figures: performance page, \"{figures.section}\". --quiet hides this note.")


def show_bfloat16_notice(precision: str, engine: str, flavor: str, quiet: bool, command: str = "predict") -> bool:
    """Write :func:`bfloat16_notice` to stderr as ``gamornet COMMAND: note: ...`` unless ``quiet``; True if written."""
    notice = None if quiet else bfloat16_notice(precision, engine, flavor)
    if notice is None:
        return False
    text = textwrap.fill(notice, width=100, initial_indent=f"gamornet {command}: note: ", subsequent_indent="  ")
    print(text, file=sys.stderr, flush=True)
    return True
