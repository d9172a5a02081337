"""Progress output: rates as people write them, plain epoch lines, bars that suit their stream."""

from __future__ import annotations

import io

import pytest

from gamornet.core import progress


@pytest.mark.parametrize(("count", "seconds", "text"), [
    (2600, 2, "1,300 img/s"),
    (25, 2, "12.5 img/s"),
    (1, 3, "0.33 img/s"),
    (1_234_567, 1, "1,234,567 img/s"),
    (99.96, 1, "100 img/s"),  # rounding never gives "100.0"
    (10, 0, "-- img/s"),
    (0, 5, "-- img/s"),
])
def test_rates_read_as_people_write_them(count, seconds, text):
    assert progress.format_rate(count, seconds) == text
    assert "Ki" not in progress.format_rate(count, seconds)


def test_durations():
    assert [progress.format_duration(s) for s in (0.84, 42.4, 185, 7440)] == ["0.8 s", "42 s", "3 min 05 s",
                                                                            "2 h 04 min"]


def test_epoch_line_is_one_plain_line():
    line = progress.epoch_line(2, 100, 2048, 2.0, {"loss": 0.693147, "accuracy": 0.5, "val_loss": 1e-5},
                               train_seconds=1.6)
    assert line == ("Epoch 3/100: 2,048 img in 2.0 s (1,280 img/s) - loss 0.6931 - accuracy 0.5 - "
                    "val_loss 1e-05")
    assert "\n" not in line and "\r" not in line and "\x1b" not in line


def test_bar_to_a_file_is_plain_and_counts_images_per_second(monkeypatch):
    monkeypatch.delenv("PROGRESSBAR_IS_TERMINAL", raising=False)
    stream = io.StringIO()
    assert not progress.is_terminal(stream)
    bar = progress.progress_bar(3000, label="Predicting", stream=stream)
    for done in (1000, 2000, 3000):
        bar.update(done)
    bar.finish()
    text = stream.getvalue()
    assert "\x1b[" not in text and "\r" not in text
    assert "img/s" in text and "Kiimg" not in text and "3000/3000" in text


def test_silent_bar_writes_nothing(capsys):
    bar = progress.progress_bar(10, enabled=False)
    bar.update(10)
    bar.finish()
    assert capsys.readouterr() == ("", "")
