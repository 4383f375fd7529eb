import logging

import numpy as np
import pytest
import torch
from PIL import Image

from ocrlib.charset import Charset
from ocrlib.data import (
    DataError, OCRDataset, ctc_collate, ctc_time_steps, image_to_tensor, load_image, read_labels,
)

CS = Charset()


def _write_set(folder, rows, size=(100, 32)):
    """rows: (name, label, image or None to skip writing)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for name, label in rows:
        path = folder / "images" / name
        if not path.exists():
            Image.new("RGB", size, (200, 10, 10)).save(path)
        lines.append(f"images/{name}\t{label}")
    (folder / "labels.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "I;16", "I", "1", "CMYK"])
def test_any_mode_loads_as_rgb_and_becomes_a_normalised_tensor(tmp_path, mode):
    arr = (np.arange(40 * 120).reshape(40, 120) % 256).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode)
    if mode == "I;16":
        img = Image.fromarray(arr.astype(np.uint16) * 257)
        assert img.mode == "I;16"
    path = tmp_path / f"x.{ 'tiff' if mode in ('I', 'CMYK') else 'png'}"
    img.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (120, 40)
    t = image_to_tensor(out)
    assert t.shape == (3, 32, 320) and t.dtype == torch.float32
    # 120x40 -> 96x32, standardised, then padded with the background level (the median)
    fill = float(t[0, :, :96].median())
    assert torch.allclose(t[:, :, 96:], torch.tensor(fill)) and t[:, :, :96].std() > 0.5
    own = image_to_tensor(out, pad=False)
    assert own.shape == (3, 32, 96) and torch.equal(own, t[:, :, :96])
    imagenet = image_to_tensor(out, normalize="imagenet")
    assert torch.all(imagenet[:, :, 96:] == 0)  # the original's padding: the mean colour


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    arr = np.full((32, 64), 65535, np.uint16)
    arr[:, :32] = 0
    Image.fromarray(arr).save(tmp_path / "x.png")
    gray = np.asarray(load_image(tmp_path / "x.png").convert("L"))
    assert gray[0, 0] == 0 and gray[0, -1] == 255


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (20, 10), (0, 0, 0, 0)).save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png")).min() == 255


def test_wide_images_are_shrunk_to_the_input_width():
    t = image_to_tensor(Image.new("RGB", (2000, 50), (255, 255, 255)), pad=False)
    assert t.shape == (3, 32, 320)  # no padding: the image fills the width


def test_dataset_and_collate(tmp_path):
    folder = _write_set(tmp_path, [("a.png", "abc"), ("b.png", "HR99"), ("c.png", "x y")])
    ds = OCRDataset(folder, Charset(CS.chars + " "))
    assert len(ds) == 3 and ds.widths() == [100, 100, 100]
    batch = ctc_collate([ds[i] for i in range(3)])
    assert batch.images.shape == (3, 3, 32, 100)  # the widest image, no fixed 320
    assert batch.frames.tolist() == [25, 25, 25] and batch.frame_targets is None
    assert batch.target_lengths.tolist() == [3, 4, 3]
    assert batch.targets.shape == (10,) and int(batch.targets.min()) >= 1
    assert batch.texts == ["abc", "HR99", "x y"]


def test_a_batch_pads_to_its_widest_line_and_counts_each_lines_frames(tmp_path):
    (tmp_path / "images").mkdir()
    for name, w in (("a.png", 50), ("b.png", 130), ("c.png", 900)):
        Image.new("RGB", (w, 32), (255, 255, 255)).save(tmp_path / "images" / name)
    (tmp_path / "labels.txt").write_text("images/a.png\taa\nimages/b.png\tb\nimages/c.png\tc\n")
    ds = OCRDataset(tmp_path, CS)
    assert ds.widths() == [50, 130, 320]  # at most the model's width
    batch = ctc_collate([ds[0], ds[1]])
    assert batch.images.shape[-1] == 132 and batch.widths.tolist() == [50, 130]
    assert batch.frames.tolist() == [13, 33]
    small = ctc_collate([ds[0]])
    assert torch.equal(small.images[0], batch.images[0, :, :, :52])  # padding is background
    assert len(OCRDataset(tmp_path, CS, limit=2)) == 2


def test_original_space_separated_format_is_read(tmp_path):
    (tmp_path / "labels.txt").write_text("images/x.jpg LABEL1\nimages/y.jpg two words\n")
    items = read_labels(tmp_path)
    assert [(i.path.name, i.text) for i in items] == [("x.jpg", "LABEL1"), ("y.jpg", "two words")]


def test_line_without_separator_is_named(tmp_path):
    (tmp_path / "labels.txt").write_text("images/a.png\tok\njustapath\n")
    with pytest.raises(DataError, match=r"labels.txt:2"):
        read_labels(tmp_path)


def test_missing_labels_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.txt"):
        OCRDataset(tmp_path, CS)


@pytest.mark.parametrize("label,why", [
    ("ab$c", r"labels.txt:2: character '\$' in label 'ab\$c'"),
    ("", r"labels.txt:2: empty label"),
    ("a" * 41, r"labels.txt:2: label 'a+' needs 81 CTC frames .* only 80"),
    ("ab" * 41, r"labels.txt:2: label .* needs 82 CTC frames"),
])
def test_bad_labels_are_named_by_file_and_line(tmp_path, label, why):
    _write_set(tmp_path, [("a.png", "ok"), ("b.png", label)])
    with pytest.raises(DataError, match=why):
        OCRDataset(tmp_path, CS)


def test_label_length_limit_follows_the_time_steps():
    assert ctc_time_steps(320) == 80 and ctc_time_steps(160) == 40 and ctc_time_steps(321) == 81


def test_missing_images_are_named_up_front_and_corrupt_ones_when_loaded(tmp_path):
    _write_set(tmp_path, [("a.png", "ok"), ("b.png", "bad"), ("c.png", "gone")])
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "images" / "c.png").unlink()
    with pytest.raises(DataError, match=r"labels.txt:3: image file not found: .*c.png"):
        OCRDataset(tmp_path, CS)
    ds = OCRDataset(tmp_path, CS, skip_bad=True)
    assert len(ds) == 2 and ds[0] is not None and ds.skipped[0].endswith("c.png")
    ds.skip_bad = False
    with pytest.raises(DataError, match=r"b.png: cannot read image.*labels.txt:2"):
        ds[1]


def test_every_bad_sample_of_a_set_is_named_at_once(tmp_path):
    rows = [(f"{k}.png", "ok") for k in range(30)]
    rows[3], rows[7] = ("3.png", "a$b"), ("7.png", "")
    rows[9:30] = [(f"{k}.png", "a#" if k % 2 else "") for k in range(9, 30)]
    _write_set(tmp_path, rows)
    (tmp_path / "images" / "5.png").unlink()
    with pytest.raises(DataError) as err:
        OCRDataset(tmp_path, CS)
    msg = str(err.value)
    assert "24 bad samples" in msg and "labels.txt:4: character '$'" in msg
    assert "labels.txt:6: image file not found" in msg and "labels.txt:8: empty label" in msg
    assert "... and 4 more" in msg and "--skip-bad" in msg  # 20 listed, then a count


def test_skip_bad_counts_and_drops(tmp_path, caplog):
    _write_set(tmp_path, [("a.png", "ok"), ("b.png", "b$d"), ("c.png", ""), ("d.png", "fine")])
    (tmp_path / "images" / "d.png").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        ds = OCRDataset(tmp_path, CS, skip_bad=True)
    assert len(ds) == 2 and "2 bad samples" in caplog.text and "labels.txt:2" in caplog.text
    batch = ctc_collate([ds[0], ds[1]])
    assert batch.texts == ["ok"] and ds.bad_images == 1
    with pytest.raises(DataError, match="unreadable"):
        ctc_collate([None])


@pytest.mark.parametrize("normalize", ["grey", "imagenet"])
def test_a_cached_line_is_the_line_loaded_again_and_the_cache_keeps_to_its_size(tmp_path, normalize):
    from ocrlib.profiles import profiles
    from ocrlib.synth import generate_splits

    generate_splits(tmp_path, {"train": 10}, seed=1, cfg=profiles()["tiny"].synth, workers=1,
                    progress=False)
    folder = tmp_path / "train"
    plain = OCRDataset(folder, CS, normalize=normalize)
    cached = OCRDataset(folder, CS, normalize=normalize, cache_mb=1)
    three = sum(plain.prepared(i)[0][: 1 if normalize == "grey" else 3].numel() * 4 for i in range(3))
    small = OCRDataset(folder, CS, normalize=normalize, cache_mb=three / 2**20)
    want = [plain[i] for i in range(len(plain))]
    for ds in (cached, small):
        assert [s.image.shape for s in (ds[i] for i in range(len(ds)))] == [s.image.shape for s in want]
    for p in (folder / "images").iterdir():  # from here on only the cache has the lines
        p.unlink()
    with pytest.raises(DataError, match="labels.txt:1"):
        plain[0]
    for i, w in enumerate(want):
        got = cached[i]
        assert torch.equal(got.image, w.image) and got.image.shape[0] == 3
        assert (got.fill, got.target, got.text, got.centres) == (w.fill, w.target, w.text, w.centres)
    assert all(torch.equal(small[i].image, want[i].image) for i in range(3))
    with pytest.raises(DataError, match="labels.txt:4"):
        small[3]  # the cache was full after three lines
    batch = ctc_collate([cached[i] for i in range(4)])
    assert torch.equal(batch.images, ctc_collate(want[:4]).images)
