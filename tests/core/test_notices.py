"""The bfloat16 notice of ``gamornet predict``: when it speaks, and that its figures are the performance page's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gamornet.core import notices

PERFORMANCE_PAGE = Path(__file__).resolve().parents[2] / "docs" / "performance.rst"
AMX = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16"}
ZEN4 = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}


@pytest.fixture(autouse=True)
def _no_gpu(monkeypatch):
    monkeypatch.setattr(notices, "nvidia_gpu_visible", lambda: False)


def test_notice_quotes_the_figures_of_a_cpu_like_this_one():
    amx = notices.bfloat16_notice(flags=AMX)
    assert "--precision bfloat16" in amx and "4.57x (CANDELS) / 4.28x (SDSS)" in amx
    assert "2.87x (CANDELS) / 3.26x (SDSS)" in amx and "0.00-0.39%" in amx and "0.00-0.78%" in amx
    assert notices.BFLOAT16_AMX.section in amx
    zen4 = notices.bfloat16_notice(flags=ZEN4)
    assert "2.10x (CANDELS) / 2.01x (SDSS)" in zen4 and notices.BFLOAT16_AVX512.section in zen4


@pytest.mark.parametrize(("kwargs", "flags"), [
    ({}, {"avx2", "fma"}),                       # no native bfloat16: it would be slower
    ({"precision": "bfloat16"}, AMX),            # already asked for
    ({"engine": "tflearn"}, AMX),
    ({"flavor": "tflearn"}, AMX),
])
def test_no_notice(kwargs, flags):
    assert notices.bfloat16_notice(flags=flags, **kwargs) is None


def test_no_notice_beside_a_gpu(monkeypatch):
    monkeypatch.setattr(notices, "nvidia_gpu_visible", lambda: True)
    assert notices.bfloat16_notice(flags=AMX) is None


def test_quiet_silences_and_the_note_goes_to_stderr(monkeypatch, capsys):
    monkeypatch.setenv("GAMORNET_CPU_FLAGS", " ".join(sorted(AMX)))
    assert not notices.show_bfloat16_notice("float32", "auto", "keras", quiet=True)
    assert capsys.readouterr() == ("", "")
    assert notices.show_bfloat16_notice("float32", "auto", "keras", quiet=False)
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("gamornet predict: note: ") and err.count("--precision bfloat16") == 1


def _section(title: str) -> str:
    text = PERFORMANCE_PAGE.read_text()
    start = text.index(f"\n{title}\n")
    following = re.search(r"\n[^\n]+\n[~\-=]{4,}\n", text[start + len(title) + 2:])
    return text[start: start + len(title) + 2 + (following.start() if following else len(text))]


@pytest.mark.parametrize("figures", [notices.BFLOAT16_AMX, notices.BFLOAT16_AVX512])
def test_the_performance_page_shows_the_notice_figures(figures):
    """The figures live in gamornet.core.notices; the section the notice names shows the same numbers."""
    section = _section(figures.section)
    for value in (*figures.openvino, *figures.keras):
        assert f"{value:.2f}" in section, (figures.section, value)
    for pair in (figures.labels_argmax, figures.labels_policies):
        assert f"{pair[1]:.2f}%" in section, (figures.section, pair)
