import copy
import json
import subprocess
import sys

import pytest
from PIL import Image

from ocrlib.inference import Recognizer, expand_paths
from ocrlib.synth import generate_splits
from ocrlib.train import TrainConfig, profiles, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("inf")
    prof = copy.deepcopy(profiles()["tiny"])
    prof.model.encoder.d_model = 32
    generate_splits(root / "data", {"train": 8, "val": 6}, seed=0, cfg=prof.synth, workers=1,
                    progress=False)
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=2, save_every=2, amp="off", device="cpu")
    res = train(prof.model, cfg, root / "data/train", root / "data/val", root / "best_m.pth",
                progress=False)
    return root, res.best


def _ocrlib(*args):
    return subprocess.run([sys.executable, "-m", "ocrlib", *args], capture_output=True, text=True)


def test_eval_json_has_the_documented_keys(trained):
    root, ckpt = trained
    proc = _ocrlib("eval", "--data", str(root / "data/val"), "--checkpoint", str(ckpt), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"cer", "wer", "accuracy", "cer_ci", "n", "images_per_s"}
    assert result["n"] == 6 and result["cer"] >= 0 and 0 <= result["accuracy"] <= 1


def test_eval_counts_labels_outside_the_charset(trained, tmp_path):
    root, ckpt = trained
    folder = tmp_path / "mixed"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (60, 32), "white").save(folder / "images" / "a.png")
    (folder / "labels.txt").write_text("images/a.png\tA#2\nimages/a.png\t12\n")
    r = Recognizer.from_checkpoint(ckpt).evaluate(folder)
    assert r["n"] == 2 and r["unknown_labels"] == 1


def test_infer_reads_folders_and_reports_a_corrupt_image(trained, tmp_path):
    root, ckpt = trained
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    proc = _ocrlib("infer", str(root / "data/val/images"), str(tmp_path / "broken.png"),
                   "--checkpoint", str(ckpt))
    assert proc.returncode == 1  # one image failed
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6 and all(len(line.split("\t")) == 3 for line in lines)
    assert "broken.png" in proc.stderr and "cannot read image" in proc.stderr
    ok = _ocrlib("infer", str(root / "data/val/images/00000[0-2].png"), "--checkpoint", str(ckpt))
    assert ok.returncode == 0 and len(ok.stdout.strip().splitlines()) == 3


def test_expand_paths_keeps_missing_names_for_reporting(tmp_path):
    assert expand_paths([str(tmp_path / "nope.png")]) == [tmp_path / "nope.png"]


def test_missing_checkpoint_is_a_clear_cli_error(tmp_path):
    proc = _ocrlib("eval", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "x.pth"))
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr


def test_eval_and_infer_with_beam_search(trained):
    root, ckpt = trained
    proc = _ocrlib("eval", "--data", str(root / "data/val"), "--checkpoint", str(ckpt),
                   "--decoder", "beam", "--beam-width", "4", "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    assert "6 images" in proc.stdout and "(beam)" in proc.stdout
    greedy = Recognizer.from_checkpoint(ckpt, combine="surest").evaluate(root / "data/val")
    beam = Recognizer.from_checkpoint(ckpt, decoder="beam", beam_width=4, combine="surest"
                                      ).evaluate(root / "data/val")
    # each view's beam reading is never less probable than its greedy one, so neither is the
    # surest view's, line by line
    assert all(b >= g * (1 - 1e-5) for g, b in zip(greedy["confidences"], beam["confidences"]))
    out = _ocrlib("infer", str(root / "data/val/images/000000.png"), "--checkpoint", str(ckpt),
                  "--decoder", "beam")
    path, text, conf = out.stdout.strip().split("\t")
    assert out.returncode == 0 and path.endswith("000000.png") and 0.0 <= float(conf) <= 1.0


def test_recognizer_refuses_an_unknown_decoder(trained):
    _, ckpt = trained
    with pytest.raises(ValueError, match="greedy or beam"):
        Recognizer.from_checkpoint(ckpt, decoder="viterbi")
    proc = _ocrlib("eval", "--data", "nowhere", "--checkpoint", str(ckpt), "--beam-width", "0",
                   "--decoder", "beam")
    assert proc.returncode == 2 and "beam width" in proc.stderr


def test_eval_names_a_missing_folder(trained):
    _, ckpt = trained
    proc = _ocrlib("eval", "--data", "no/such/folder", "--checkpoint", str(ckpt))
    assert proc.returncode == 2 and "no/such/folder" in proc.stderr


def test_eval_draws_the_failure_grid(trained, tmp_path):
    root, ckpt = trained
    png = tmp_path / "fails.png"
    proc = _ocrlib("eval", "--data", str(root / "data/val"), "--checkpoint", str(ckpt),
                   "--failures", str(png), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 6  # --json output stays one object
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_an_image_in_memory_reads_as_the_same_file_on_disk(trained, tmp_path):
    """One loader (ocrlib.data.as_rgb) for both: an RGBA image is composited over white either way."""
    import numpy as np

    from ocrlib.data import load_image

    _, ckpt = trained
    rgba = Image.new("RGBA", (90, 32), (0, 0, 0, 0))
    arr = np.array(rgba)
    arr[8:24, 10:80] = (20, 20, 20, 255)  # an opaque dark bar on a transparent background
    rgba = Image.fromarray(arr)
    rgba.save(tmp_path / "t.png")
    rec = Recognizer.from_checkpoint(ckpt)
    a, b = rec.prepare([rgba]), rec.prepare([load_image(tmp_path / "t.png")])
    assert a.images.shape == b.images.shape
    assert np.allclose(a.images.numpy(), b.images.numpy())
    assert rec.read([rgba])[0].text == rec.read([load_image(tmp_path / "t.png")])[0].text


def test_eval_names_every_bad_sample_or_scores_without_them(trained, tmp_path):
    root, ckpt = trained
    folder = tmp_path / "bad"
    (folder / "images").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (60, 32), "white").save(folder / "images" / name)
    (folder / "images" / "c.png").write_bytes(b"\x89PNG broken")
    (folder / "labels.txt").write_text("images/a.png\t12\nimages/gone.png\t3\n"
                                       "images/b.png\t\nimages/c.png\t4\nimages/a.png\t5\n")
    proc = _ocrlib("eval", "--data", str(folder), "--checkpoint", str(ckpt))
    assert proc.returncode == 2  # the CLI's error status, with the message on stderr
    assert "2 bad samples" in proc.stderr and "labels.txt:2" in proc.stderr and "labels.txt:3" in proc.stderr
    ok = _ocrlib("eval", "--data", str(folder), "--checkpoint", str(ckpt), "--json", "--skip-bad")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n"] == 2  # a.png twice; gone, empty and unreadable left out
    assert ok.stderr.count("ocrlib eval: skipped") == 3 and "c.png" in ok.stderr
