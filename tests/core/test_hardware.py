"""CPU model, flags and native bfloat16, read from /proc/cpuinfo-style files."""

from __future__ import annotations

import pytest

from gamornet.core import hardware

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 xsave

processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 xsave
"""
AVX2 = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma f16c
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 fma avx512f avx512_vnni amx_tile amx_bf16 amx_int8
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes sha2 crc32 atomics fphp asimdhp sve bf16 i8mm
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize(("text", "model", "native", "listed"), [
    (ZEN4, "AMD EPYC 9R14 96-Core Processor", True, "avx2 fma avx512f avx512_vnni avx512_bf16"),
    (AVX2, "AMD EPYC", False, "avx2 fma"),
    (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8480+", True, "avx2 fma avx512f avx512_vnni amx_tile amx_bf16"),
])
def test_x86_flags_and_native_bfloat16(tmp_path, text, model, native, listed):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    flags = hardware.cpu_flags(str(path))
    assert hardware.cpu_model(str(path)) == model
    assert hardware.native_bfloat16(flags) is native
    assert hardware.cpu_summary(flags, model) == f"{model}; {listed}"


def test_arm_features_line(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(GRAVITON3)
    flags = hardware.cpu_flags(str(path))
    assert "sve" in flags and hardware.native_bfloat16(flags)
    assert not hardware.native_bfloat16({"fp", "asimd", "sve"})


def test_missing_cpuinfo_gives_no_flags(tmp_path):
    missing = str(tmp_path / "no-such-file")
    assert hardware.cpu_flags(missing) == frozenset()
    assert hardware.cpu_model(missing)  # the machine type instead
    assert not hardware.native_bfloat16(hardware.cpu_flags(missing))
    assert "none of" in hardware.cpu_summary(frozenset(), "x")


def test_this_machine_agrees_with_proc_cpuinfo():
    try:
        with open("/proc/cpuinfo", encoding="utf8") as f:
            text = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this system")
    line = next((line for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")), "")
    flags = set(line.partition(":")[2].split())
    assert hardware.cpu_flags() == flags
    assert hardware.native_bfloat16() == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def test_nvidia_gpu_visible_reads_the_driver_folder_and_cuda_visible_devices(tmp_path, monkeypatch):
    gpus = tmp_path / "gpus"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not hardware.nvidia_gpu_visible(str(gpus))  # no driver folder: no GPU
    gpus.mkdir()
    assert not hardware.nvidia_gpu_visible(str(gpus))  # the driver lists none
    (gpus / "0000:01:00.0").mkdir()
    assert hardware.nvidia_gpu_visible(str(gpus))
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not hardware.nvidia_gpu_visible(str(gpus))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert hardware.nvidia_gpu_visible(str(gpus))


def test_flags_override_by_environment(tmp_path, monkeypatch):
    """GAMORNET_CPU_FLAGS replaces this CPU's flags (spaces or commas); a file named explicitly is still read."""
    path = tmp_path / "cpuinfo"
    path.write_text(AVX2)
    monkeypatch.setenv(hardware.CPU_FLAGS_ENV, "AVX2, fma amx_tile,amx_bf16")
    assert hardware.cpu_flags() == {"avx2", "fma", "amx_tile", "amx_bf16"}
    assert hardware.native_bfloat16()
    assert hardware.cpu_flags(str(path)) == {"fpu", "sse2", "avx", "avx2", "fma", "f16c"}
    monkeypatch.setenv(hardware.CPU_FLAGS_ENV, "avx2 fma")
    assert not hardware.native_bfloat16()
