import math
import re

import pytest

from ocrlib.analysis import error_table
from ocrlib.browser import (ANY_BACKGROUND, ANY_ERROR, ANY_FONT, CORRECT, EVERYTHING,
                            BrowserModel, ErrorBrowser, Filters, background_options, describe,
                            diff_html, filter_table, font_options, kind_options)
from ocrlib.data import read_labels


@pytest.fixture()
def table(tmp_path):
    from PIL import Image

    refs = ["1123", "abc", "456", "789", "12"]
    preds = ["123", "abd", "456", "7890", "xy"]
    paths = []
    for k in range(5):
        p = tmp_path / f"{k}.png"
        Image.new("RGB", (40, 32), "white").save(p)
        paths.append(str(p))
    t = error_table(refs, preds, paths, confidences=[0.5, 0.4, 0.99, 0.6, 0.1],
                    alternatives=[[("1123", 0.2)], [], [], [], []])
    t["font"] = ["A", "B", "A", "B", "A"]
    t["background"] = ["photo", "flat", "flat", "photo", "scene"]
    return t


def test_filters_choose_by_kind_cer_font_and_background(table):
    assert filter_table(table, Filters()).index.tolist() == [0, 1, 3, 4]
    assert filter_table(table, Filters(kind=EVERYTHING)).index.tolist() == [0, 1, 2, 3, 4]
    assert filter_table(table, Filters(kind=CORRECT)).index.tolist() == [2]
    assert filter_table(table, Filters(kind="dropped repeat")).index.tolist() == [0]
    assert filter_table(table, Filters(kind="substitution")).index.tolist() == [1, 4]
    assert filter_table(table, Filters(cer=(0.3, 0.5))).index.tolist() == [1, 3]
    assert filter_table(table, Filters(cer=(0.2, 0.3))).index.tolist() == [0]
    assert filter_table(table, Filters(cer=(1.0, math.inf))).index.tolist() == [4]
    assert filter_table(table, Filters(font="A")).index.tolist() == [0, 4]
    assert filter_table(table, Filters(background="photo")).index.tolist() == [0, 3]
    assert filter_table(table, Filters(font="A", background="photo")).index.tolist() == [0]
    assert filter_table(table, Filters(kind=EVERYTHING, background="flat")).index.tolist() == [1, 2]
    with pytest.raises(ValueError, match="unknown error kind"):
        filter_table(table, Filters(kind="typo"))
    with pytest.raises(ValueError, match="no background column"):
        filter_table(table.drop(columns="background"), Filters(background="photo"))


def test_options_list_what_is_present(table):
    assert kind_options(table)[:3] == [ANY_ERROR, EVERYTHING, CORRECT]
    assert kind_options(table)[3:] == ["substitution", "dropped repeat", "insertion"]
    assert font_options(table) == [ANY_FONT, "A", "B"]
    assert font_options(table.drop(columns="font")) == [ANY_FONT]
    assert background_options(table) == [ANY_BACKGROUND, "flat", "photo", "scene"]
    assert background_options(table.drop(columns="background")) == [ANY_BACKGROUND]


def test_model_steps_wrap_and_filters_reset_position(table):
    m = BrowserModel(table)
    assert m.status() == "1 of 4" and m.current()["reference"] == "1123"
    assert m.step(1) == 1 and m.current()["reference"] == "abc"
    assert m.step(-2) == 3 and m.current()["reference"] == "12"
    m.set_filters(font="B")
    assert m.position == 0 and [r for r in m.selection["reference"]] == ["abc", "789"]
    m.set_filters(kind=CORRECT)  # font B stays: nothing matches
    assert m.current() is None and m.step(1) == 0 and "no sample" in m.status()
    with pytest.raises(ValueError, match="nothing to save"):
        m.save("anywhere")


def test_save_from_the_model_round_trips(table, tmp_path):
    m = BrowserModel(table)
    out = m.save(tmp_path / "picked")
    assert [it.text for it in read_labels(out)] == ["1123", "abc", "789", "12"]


def test_diff_marks_each_edit():
    html = diff_html("1123", "123")
    assert html.count("line-through") == 1  # the dropped '1'
    assert "background:#fdb863" in diff_html("abc", "abd") and "background:#a6dba0" in diff_html("ab", "abx")
    assert "&lt;" in diff_html("<a", "<a")  # escaped
    assert "∅" in diff_html("ab", "")


def test_describe_names_scores_kinds_and_alternatives(table):
    text = describe(table.iloc[0])
    assert "CER 0.250" in text and "confidence 0.500" in text and "dropped repeat" in text
    assert "<code>1123</code> 0.200" in text and "A" in text


def test_widget_follows_its_controls(table, tmp_path):
    b = ErrorBrowser(table, save_to=tmp_path / "sel")
    assert b.status.value == "1 of 4" and "1123" in _text(b.sample.value)
    assert b.image.value[:4] == b"\x89PNG"
    b.next.click()
    assert b.status.value == "2 of 4" and "abd" in _text(b.sample.value)
    b.kind.value = "dropped repeat"
    assert b.status.value == "1 of 1" and "1123" in _text(b.sample.value)
    b.kind.value = ANY_ERROR
    b.font.value = "B"
    assert b.status.value == "1 of 2"
    b.kind.value = "insertion"
    assert b.status.value == "1 of 1" and "7890" in _text(b.sample.value)
    b.kind.value = ANY_ERROR
    b.cer.value = (0.0, 0.3)
    assert "no sample" in b.status.value and b.image.value == b""
    b.cer.value = (0.3, 0.35)
    assert b.status.value == "1 of 2"
    b.background.value = "flat"  # font B, CER 0.3-0.35, on flat paper: "abc" -> "abd"
    assert b.status.value == "1 of 1" and "abd" in _text(b.sample.value)
    b.background.value = ANY_BACKGROUND
    b.kind.value = "insertion"
    b.save.click()
    assert "saved 1 samples" in b.message.value
    b.save.click()  # the folder is no longer empty: refused, said in the widget
    assert "not empty" in b.message.value
    seen = []
    b2 = ErrorBrowser(table, alignment_view=lambda row: seen.append(row["reference"]) or _fig())
    assert seen == ["1123"] and b2.image.value[:4] == b"\x89PNG"


def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    return fig


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)
