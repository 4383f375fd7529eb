"""LMDB sets: converted both ways, read by the same dataset as folders, bad records named."""

import subprocess
import sys

import lmdb
import pytest
import torch

from ocrlib.charset import Charset
from ocrlib.data import OCRDataset, ctc_collate
from ocrlib.folder import DataError, read_labels
from ocrlib.lmdbset import folder_to_lmdb, is_lmdb, lmdb_to_folder, read_lmdb_labels
from ocrlib.synth import SynthConfig, generate

CS = Charset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("set") / "folder"
    generate(out, 12, seed=0, cfg=SynthConfig(min_len=2, max_len=6), workers=1, progress=False)
    return out


def test_a_folder_and_its_lmdb_read_the_same(folder, tmp_path):
    assert folder_to_lmdb(folder, tmp_path / "set.lmdb") == 12 and is_lmdb(tmp_path / "set.lmdb")
    keys = [it.source.rsplit(":", 1)[1] for it in read_lmdb_labels(tmp_path / "set.lmdb")]
    assert keys[0] == "label-000000001" and len(keys) == 12
    a, b = OCRDataset(folder, CS), OCRDataset(tmp_path / "set.lmdb", CS)
    assert [it.text for it in a.items] == [it.text for it in b.items]
    assert a.widths() == b.widths()
    ba, bb = ctc_collate([a[i] for i in range(12)]), ctc_collate([b[i] for i in range(12)])
    assert torch.equal(ba.images, bb.images) and torch.equal(ba.targets, bb.targets)


def test_lmdb_back_to_a_folder_keeps_labels_and_image_bytes(folder, tmp_path):
    folder_to_lmdb(folder, tmp_path / "set.lmdb")
    assert lmdb_to_folder(tmp_path / "set.lmdb", tmp_path / "back") == 12
    before, after = read_labels(folder), read_labels(tmp_path / "back")
    assert [it.text for it in before] == [it.text for it in after]
    assert all(x.path.read_bytes() == y.path.read_bytes() for x, y in zip(before, after))
    with pytest.raises(FileExistsError, match="overwrite"):
        folder_to_lmdb(folder, tmp_path / "back")


def test_bad_records_are_named_by_key(tmp_path):
    env = lmdb.open(str(tmp_path / "bad"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"num-samples", b"3")
        png = (tmp_path / "x.png")
        from PIL import Image

        Image.new("RGB", (40, 32), "white").save(png)
        txn.put(b"image-000000001", png.read_bytes())
        txn.put(b"label-000000001", b"ok")
        txn.put(b"image-000000002", png.read_bytes())
        txn.put(b"label-000000002", b"")
        txn.put(b"label-000000003", b"a#b")  # and no image-000000003
    env.close()
    with pytest.raises(DataError) as err:
        OCRDataset(tmp_path / "bad", CS)
    msg = str(err.value)
    assert "bad:label-000000002: empty label" in msg and "bad:label-000000003: character '#'" in msg
    assert len(OCRDataset(tmp_path / "bad", CS, skip_bad=True)) == 1


def test_convert_command_goes_both_ways(folder, tmp_path):
    run = [sys.executable, "-m", "ocrlib", "convert"]
    to = subprocess.run(run + [str(folder), str(tmp_path / "x.lmdb")], capture_output=True, text=True)
    assert to.returncode == 0 and "12 samples" in to.stdout and "LMDB" in to.stdout
    back = subprocess.run(run + [str(tmp_path / "x.lmdb"), str(tmp_path / "f")], capture_output=True, text=True)
    assert back.returncode == 0 and len(read_labels(tmp_path / "f")) == 12


def test_eval_reads_an_lmdb_set(folder, tmp_path):
    import copy

    from ocrlib.inference import Recognizer
    from ocrlib.model import MambaOCR
    from ocrlib.profiles import profiles

    folder_to_lmdb(folder, tmp_path / "set.lmdb")
    model = MambaOCR(copy.deepcopy(profiles()["tiny"].model))
    a = Recognizer(model).evaluate(folder)
    b = Recognizer(model).evaluate(tmp_path / "set.lmdb")
    assert a["n"] == b["n"] == 12 and a["predictions"] == b["predictions"]
    assert b["paths"][0].endswith("image-000000001")


def test_synth_writes_an_lmdb_set(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ocrlib", "synth", "--out", str(tmp_path / "s"),
                           "--n", "5", "--format", "lmdb", "--quiet", "--workers", "1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert is_lmdb(tmp_path / "s") and len(read_lmdb_labels(tmp_path / "s")) == 5
    assert not (tmp_path / "s" / "labels.txt").exists() and not (tmp_path / "s.lmdb-tmp").exists()
