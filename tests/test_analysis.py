import matplotlib
import pytest
import torch

from ocrlib.analysis import (alignment_data, breakdown, confusion_matrix, confusions, error_kinds,
                             error_table, frame_columns, save_selection, worst)
from ocrlib.viz import failure_grid, plot_alignment, plot_breakdowns, plot_confusion_matrix
from ocrlib.charset import Charset
from ocrlib.data import OCRDataset, read_labels, read_meta
from ocrlib.synth import SynthConfig, generate

matplotlib.use("Agg")
DIGITS = Charset("0123456789")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("an") / "set"
    generate(out, 8, seed=0, cfg=SynthConfig(chars="0123456789", min_len=3, max_len=6), split="test",
             workers=1, progress=False)
    return out


def known_table(folder):
    items = read_labels(folder)
    refs = [it.text for it in items]
    # fixed mistakes: 0 right, 1 one substitution, 2 drops a character, 3 adds one, rest right
    preds = list(refs)
    preds[1] = ("9" if refs[1][0] != "9" else "8") + refs[1][1:]
    preds[2] = refs[2][:-1]
    preds[3] = refs[3] + "7"
    return error_table(refs, preds, [str(it.path) for it in items],
                       confidences=[0.9, 0.2, 0.3, 0.4, 0.8, 0.8, 0.9, 0.95], folder=folder), refs


@pytest.mark.parametrize("ref, hyp, kinds", [
    ("1123", "123", ["dropped repeat"]),
    ("123", "1223", ["doubled character"]),
    ("abc", "abd", ["substitution"]),
    ("abc", "ac", ["deletion"]),
    ("abc", "abxc", ["insertion"]),
    ("abc", "abc", []),
    ("5500", "560", ["substitution", "dropped repeat"]),
])
def test_error_kinds(ref, hyp, kinds):
    assert error_kinds(ref, hyp) == kinds


def test_error_table_rows_scores_and_metadata(folder):
    table, refs = known_table(folder)
    meta = read_meta(folder)
    assert len(table) == 8 and list(table["reference"]) == refs
    assert list(table["correct"]) == [True, False, False, False, True, True, True, True]
    assert table.loc[1, "cer"] == pytest.approx(1 / len(refs[1]))
    assert table.loc[1, "kinds"] == ("substitution",)
    assert table.loc[3, "kinds"] in (("insertion",), ("doubled character",))
    first = meta["images/000000.png"]
    assert table.loc[0, "font"] == first["font"] and table.loc[0, "angle"] == first["angle"]
    assert table.loc[0, "abs_angle"] == abs(first["angle"]) and table.loc[0, "fg"] == tuple(first["fg"])
    assert table.loc[0, "length"] == len(refs[0])
    assert list(table["crop"]) == [meta[f"images/{k:06d}.png"]["crop"] for k in range(8)]
    # without metadata the table still works, with no metadata columns
    plain = error_table(["ab"], ["a"], ["x.png"])
    assert "font" not in plain.columns and plain.loc[0, "kinds"] == ("deletion",)
    with pytest.raises(ValueError, match="2 references, 1 predictions"):
        error_table(["a", "b"], ["a"], ["p", "q"])


def test_confusions_and_matrix(folder):
    table = error_table(["1123", "abc", "19", "19"], ["123", "abd", "17", "17"], ["a", "b", "c", "d"])
    c = confusions(table)
    assert list(c.columns) == ["kind", "reference", "prediction", "count"]
    assert c.iloc[0].tolist() == ["substitute", "9", "7", 2]
    assert set(map(tuple, c.itertuples(index=False))) == {
        ("substitute", "9", "7", 2), ("delete", "1", "", 1), ("substitute", "c", "d", 1)}
    m = confusion_matrix(table, "0123456789")
    assert m.loc["9", "7"] == 2 and m.loc["1", "∅"] == 1 and m.to_numpy().sum() == 3  # 'c' not a digit
    fig = plot_confusion_matrix(m)
    assert len(fig.axes) == 2  # the heat map and its colour bar


def test_breakdowns_by_length_font_and_binned_numbers(folder):
    table = error_table(["12", "34", "567", "890", "1234"], ["12", "35", "567", "8", "1234"],
                        ["a", "b", "c", "d", "e"])
    by_len = breakdown(table, "length")
    assert by_len["group"].tolist() == [2, 3, 4] and by_len["n"].tolist() == [2, 2, 1]
    assert by_len["cer"].tolist() == pytest.approx([1 / 4, 2 / 6, 0.0])
    assert by_len["accuracy"].tolist() == pytest.approx([0.5, 0.5, 1.0])
    real, _ = known_table(folder)
    fonts = breakdown(real, "font")
    assert fonts["n"].sum() == 8 and set(fonts["group"]) == set(real["font"])
    noise = breakdown(real, "noise", bins=[0, 5, 100])
    assert noise["n"].sum() == 8 and len(noise) <= 2
    with pytest.raises(KeyError, match="no column 'colour'"):
        breakdown(real, "colour")
    fig = plot_breakdowns(real)
    assert [ax.get_title() for ax in fig.axes] == [
        "CER by length", "CER by family", "CER by abs_angle", "CER by blur", "CER by noise"]


def test_alignment_view_shapes():
    assert frame_columns(128, 32).shape == (32, 2)
    assert frame_columns(128, 32)[1].tolist() == [4.0, 8.0]
    lp = torch.randn(32, 11).log_softmax(-1)
    d = alignment_data(lp, DIGITS, 128)
    assert d["probs"].shape == (11, 32) and d["columns"].shape == (32, 2)
    assert len(d["best_path"]) == 32 and d["labels"][0] == "-" and len(d["labels"]) == 11
    assert d["probs"].sum(axis=0) == pytest.approx([1.0] * 32, rel=1e-5)
    fig = plot_alignment(torch.zeros(3, 32, 128), lp, DIGITS, "123", "12", classes="all")
    top, bottom = fig.axes
    assert bottom.get_images()[0].get_array().shape == (11, 32)
    assert top.get_xlim() == bottom.get_xlim() == (0.0, 128.0)
    with pytest.raises(ValueError, match=r"\(T, V\)"):
        alignment_data(lp[None], DIGITS, 128)


def test_save_selection_round_trip(folder, tmp_path):
    table, refs = known_table(folder)
    wrong = table[~table["correct"]]
    out = save_selection(wrong, tmp_path / "sel")
    ds = OCRDataset(out, DIGITS)
    assert len(ds) == 3 and [it.text for it in read_labels(out)] == refs[1:4]
    sample = ds[0]
    assert sample.image.shape[0] == 3 and sample.text == refs[1]
    meta = read_meta(out)
    assert meta["images/000000.png"]["prediction"] == wrong.iloc[0]["prediction"]
    assert meta["images/000000.png"]["font"] == wrong.iloc[0]["font"]
    with pytest.raises(FileExistsError, match="not empty"):
        save_selection(wrong, out)
    save_selection(wrong.head(1), out, overwrite=True)
    assert len(read_labels(out)) == 1 and len(list((out / "images").iterdir())) == 1
    gone = table.head(1).assign(path=str(tmp_path / "missing.png"))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        save_selection(gone, tmp_path / "other")
    assert not (tmp_path / "other" / "labels.txt").exists()  # nothing that looks complete


def test_failure_grid_writes_the_worst_cases(folder, tmp_path):
    table, _ = known_table(folder)
    picked = worst(table, 9)
    assert len(picked) == 3 and picked["cer"].is_monotonic_decreasing
    png = failure_grid(table, tmp_path / "grid" / "fails.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as im:
        assert im.width > im.height > 0
    none = failure_grid(table[table["correct"]], tmp_path / "none.png")
    assert none.is_file()
