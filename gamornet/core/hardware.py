"""What the CPU can do: its model name, its instruction-set flags, native bfloat16 arithmetic.

Read from ``/proc/cpuinfo`` (Linux; the ``flags`` line on x86, ``Features``
on ARM), never through a deep-learning framework, so choosing an engine
costs no import.  Elsewhere the flags are unknown (empty).

Native bfloat16 means instructions that multiply bfloat16 numbers:
``avx512_bf16`` (AVX-512 BF16, e.g. AMD Zen 4, Intel Cooper Lake and
later) or ``amx_bf16`` (Intel AMX, Sapphire Rapids and later) on x86,
``bf16`` on ARM.  Without them a bfloat16 computation is emulated with
float32 arithmetic plus conversions: slower than float32, never faster.

The environment variable ``GAMORNET_CPU_FLAGS`` (flags separated by spaces
or commas, e.g. ``"avx2 fma avx512_bf16"``) replaces the flags read from
``/proc/cpuinfo``: for systems without it, or to see what gamornet does on
another CPU (which engine ``auto`` picks, whether ``gamornet predict``
mentions bfloat16).  It changes what gamornet believes, not what the CPU
does.
"""

from __future__ import annotations

import functools
import os
import platform

__all__ = ["CPU_FLAGS", "BF16_FLAGS", "CPU_FLAGS_ENV", "cpu_flags", "cpu_model", "native_bfloat16", "cpu_summary",
           "nvidia_gpu_visible"]

#: Flags that decide which kernels the inference engines pick (and so speed and the order of float32 sums).
CPU_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
#: Flags of native bfloat16 arithmetic (x86: AVX-512 BF16, AMX; ARM: BF16).
BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16", "bf16")

#: Environment variable that replaces the flags read from ``/proc/cpuinfo`` (spaces or commas between flags).
CPU_FLAGS_ENV = "GAMORNET_CPU_FLAGS"

_CPUINFO = "/proc/cpuinfo"


@functools.lru_cache(maxsize=4)
def _cpuinfo(path: str = _CPUINFO) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor listed in ``path``."""
    model, flags = "", None
    try:
        with open(path, encoding="utf8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "features") and flags is None:
                    flags = frozenset(value.split())
                if model and flags is not None:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags or frozenset()


def cpu_flags(path: str = _CPUINFO) -> frozenset[str]:
    """The instruction-set flags of the CPU (empty where ``/proc/cpuinfo`` is not available).

    Reading the default ``path``, ``GAMORNET_CPU_FLAGS`` (:data:`CPU_FLAGS_ENV`)
    replaces them where it is set.
    """
    override = os.environ.get(CPU_FLAGS_ENV) if path == _CPUINFO else None
    if override is not None:
        return frozenset(override.replace(",", " ").lower().split())
    return _cpuinfo(path)[1]


def cpu_model(path: str = _CPUINFO) -> str:
    """The CPU's model name (the machine type where it is not known)."""
    return _cpuinfo(path)[0]


def native_bfloat16(flags=None) -> bool:
    """Whether the CPU multiplies bfloat16 numbers natively (:data:`BF16_FLAGS`).

    Parameters
    ----------
    flags : iterable of str, optional
        Flags to look at; by default this CPU's (:func:`cpu_flags`).
    """
    have = cpu_flags() if flags is None else set(flags)
    return any(flag in have for flag in BF16_FLAGS)


def cpu_summary(flags=None, model: str | None = None) -> str:
    """``"<model>; <flags of CPU_FLAGS it has>"``, e.g. for benchmark reports and warnings."""
    have = cpu_flags() if flags is None else set(flags)
    listed = [flag for flag in CPU_FLAGS if flag in have]
    return f"{cpu_model() if model is None else model}; {' '.join(listed) or 'none of ' + ', '.join(CPU_FLAGS)}"


def nvidia_gpu_visible(gpus_dir: str = "/proc/driver/nvidia/gpus") -> bool:
    """Whether an NVIDIA GPU is present and not hidden by ``CUDA_VISIBLE_DEVICES``, asked of no framework.

    Linux lists the GPUs its NVIDIA driver drives under ``gpus_dir``;
    ``CUDA_VISIBLE_DEVICES`` set to an empty string or ``-1`` hides them
    from every CUDA framework.  Elsewhere (no such folder) the answer is
    False.
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    try:
        return bool(os.listdir(gpus_dir))
    except OSError:
        return False
