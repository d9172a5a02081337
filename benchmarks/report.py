"""Figures of a benchmark run: collecting, timing helpers, the machine, and the printed table."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.config import COMMON_FIGURES, SURVEY_FIGURES, SURVEYS, Settings
from gamornet import __version__

# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One measured figure.

    Attributes
    ----------
    value : float or None
        Median of ``runs`` (None when it could not be measured: see ``error``).
    unit : str
    runs : list of float
        Every timed repeat.
    reference : str or None
        ``group/name`` of the figure ``ratio`` divides by.
    ratio : float or None
        ``value / reference value``.
    note : str
        How it was measured, when that is not obvious.
    error : str or None
        Why there is no value (an exception, or ``skipped: ...``).
    """

    label: str
    unit: str
    value: float | None = None
    runs: list = field(default_factory=list)
    reference: str | None = None
    ratio: float | None = None
    note: str = ""
    error: str | None = None


class Results:
    """Figures by group, in the order of the specs, plus profiles."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.figures: dict[str, dict[str, Figure]] = {"common": {}}
        for survey in settings.surveys:
            self.figures[survey] = {}
        self.profiles: dict[str, dict] = {}

    @staticmethod
    def _spec(group: str, name: str) -> tuple[str, str]:
        return (COMMON_FIGURES if group == "common" else SURVEY_FIGURES)[name]

    def add(self, group: str, name: str, runs, note: str = "") -> Figure:
        runs = [float(r) for r in np.atleast_1d(runs)]
        label, unit = self._spec(group, name)
        fig = Figure(label, unit, statistics.median(runs) if runs else None, runs, note=note)
        self.figures[group][name] = fig
        log(f"[{group}] {label}: {fmt(fig.value)} {unit}")
        return fig

    def fail(self, group: str, names, reason: str) -> None:
        for name in names:
            if name not in self.figures[group]:
                label, unit = self._spec(group, name)
                self.figures[group][name] = Figure(label, unit, error=reason)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.3g}" if magnitude < 10 else f"{value:.1f}"
    return f"{value:.3g}" if magnitude >= 1e-3 else f"{value:.1e}"


@contextlib.contextmanager
def section(results: Results, group: str, names, title: str):
    """Run a block of measurements; on an error, its figures not yet measured get the error."""
    start = time.perf_counter()
    log(f"--- {group}: {title}")
    try:
        yield
    except Exception as exc:  # a broken part must not stop the other measurements
        reason = f"{type(exc).__name__}: {exc}"
        log(f"[{group}] {title} failed: {reason}\n{traceback.format_exc(limit=6)}")
        results.fail(group, names, reason)
    finally:
        results.profiles.setdefault("section_seconds", {})[f"{group}: {title}"] = time.perf_counter() - start


def timed(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def rates(n_images: int, times: list[float]) -> list[float]:
    return [n_images / t for t in times]


@contextlib.contextmanager
def quiet():
    """Silence stdout (TFLearn's training log) and Python warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# --------------------------------------------------------------------------- machine


def cpuinfo() -> dict:
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "flags": []}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                info["model"] = value.strip()
            elif key == "flags":
                info["flags"] = value.split()
                break
    return info


def dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """The machine and software a run measured: CPU, cores, memory, load, versions."""
    cpu = cpuinfo()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")
    memory_gb = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        memory_gb = int(f.readline().split()[1]) / 1024**2
    tensorflow = dist_version("tensorflow-cpu") or dist_version("tensorflow")
    return {
        "cpu": cpu["model"],
        "cpu_features": [flag for flag in wanted if flag in cpu["flags"]],
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": None if memory_gb is None else round(memory_gb, 1),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "gamornet": __version__,
            "numpy": np.__version__,
            "tensorflow": tensorflow,
            "keras": dist_version("keras"),
            "tflearn": dist_version("tflearn"),
            "torch": dist_version("torch"),
            "astropy": dist_version("astropy"),
        },
    }



# --------------------------------------------------------------------------- output


def _target_text(group: str, name: str, report: dict) -> tuple[str, str]:
    for target in report["targets"]:
        if target["group"] == group and target["figure"] == name:
            threshold = f"{target['operator']} {target['threshold']:g}"
            return (threshold + (" s" if target["field"] == "value" else "")), target["status"]
    return "", ""


def format_table(report: dict) -> str:
    """The report as a plain-text table (one block per group, then the file-prediction profiles)."""
    m = report["machine"]
    v = m["versions"]
    lines = [
        f"GaMorNet benchmark, {report['mode']} mode, {report['elapsed_s']:.0f} s",
        f"{m['cpu']}, {m['cores_available']} cores ({', '.join(m['cpu_features'])}), {m['memory_gb']} GB; load "
        f"average {', '.join(f'{x:.2f}' for x in m['load_average'] or [])} at start, "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average_end') or [])} at end",
        f"Python {m['python']}, numpy {v['numpy']}, tensorflow {v['tensorflow']}, keras {v['keras']}, "
        f"tflearn {v['tflearn']}, torch {v['torch']}, gamornet {v['gamornet']}",
        "",
    ]
    header = f"{'figure':<48} {'value':>9} {'unit':<9} {'ratio':>6}  {'of':<32} {'target':<8} status"
    for group, figures in report["figures"].items():
        title = "common" if group == "common" else f"{group} {'x'.join(map(str, SURVEYS[group]))}"
        lines += [f"[{title}]", header, "-" * len(header)]
        for name, fig in figures.items():
            ratio = "" if fig["ratio"] is None else f"{fig['ratio']:.2f}"
            ref = ""
            if fig["reference"]:
                ref_group, ref_name = fig["reference"].split("/")
                ref = (COMMON_FIGURES if ref_group == "common" else SURVEY_FIGURES)[ref_name][0]
                ref = ref.split(",")[0] if len(ref) > 32 else ref
            value = fmt(fig["value"]) if fig["error"] is None else ("skipped" if fig["error"].startswith("skipped")
                                                                    else "ERROR")
            target, status = _target_text(group, name, report)
            lines.append(f"{fig['label']:<48} {value:>9} {fig['unit']:<9} {ratio:>6}  {ref[:32]:<32} {target:<8} "
                         f"{status}".rstrip())
        lines.append("")
    errors = [(g, n, f["error"]) for g, figs in report["figures"].items() for n, f in figs.items()
              if f["error"] and not f["error"].startswith("skipped")]
    for group, name, error in errors:
        lines.append(f"ERROR {group}/{name}: {error.splitlines()[0][:200]}")
    for survey, profiles in report["profiles"].items():
        if survey == "section_seconds":
            continue
        for kind, stages in profiles.items():
            if kind.startswith("train_"):
                lines.append(f"profile {survey} {kind}: CPU time {stages['cpu_ms_per_image']:.1f} ms per image, "
                             f"of which system (kernel) {stages['system_ms_per_image']:.1f} ms")
                continue
            parts = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in stages.items() if k.endswith("_s") and v is not None)
            lines.append(f"profile {survey} {kind} ({stages.get('images')} images, seconds, stages run one after "
                         f"the other): {parts}")
    return "\n".join(lines).rstrip() + "\n"


def predict_probabilities(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of a Keras model on ``images`` through GaMorNet's compiled forward pass, batch by batch."""
    from gamornet.core.progress import predict_in_batches
    from gamornet.keras_backend.forward import KerasForward

    return predict_in_batches(KerasForward(model), images, batch_size, progress=False)
