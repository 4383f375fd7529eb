import subprocess
import sys


def _ocrlib(*args):
    return subprocess.run([sys.executable, "-m", "ocrlib", *args], capture_output=True, text=True)


def test_synth_and_show(tmp_path):
    proc = _ocrlib("synth", "--out", str(tmp_path / "d"), "--n", "5", "--seed", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "5 images in" in proc.stdout
    again = _ocrlib("synth", "--out", str(tmp_path / "d"), "--n", "5", "--quiet")
    assert again.returncode == 2 and "not empty" in again.stderr and "--overwrite" in again.stderr
    show = _ocrlib("show", str(tmp_path / "d"), "--grid", str(tmp_path / "g.png"))
    assert show.returncode == 0, show.stderr
    assert "5 samples" in show.stdout and (tmp_path / "g.png").stat().st_size > 1000


def test_synth_splits(tmp_path):
    proc = _ocrlib("synth", "--out", str(tmp_path), "--splits", "train=4,val=2", "--quiet",
                   "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "train/labels.txt").read_text().count("\n") == 4
    assert (tmp_path / "val/labels.txt").read_text().count("\n") == 2


def test_console_script_help_lists_subcommands():
    proc = _ocrlib("--help")
    assert proc.returncode == 0
    for cmd in ("synth", "show", "clean"):
        assert cmd in proc.stdout


def test_train_without_data_says_how_to_make_it(tmp_path):
    proc = _ocrlib("train", "--profile", "tiny", "--train", str(tmp_path / "train"),
                   "--val", str(tmp_path / "val"), "--out", str(tmp_path / "ck.pth"))
    assert proc.returncode == 2
    assert "no labels.txt" in proc.stderr and "ocrlib synth" in proc.stderr and "--profile tiny" in proc.stderr


def test_synth_with_a_profile_uses_its_charset_and_style(tmp_path):
    import dataclasses
    import json

    from ocrlib.train import profiles

    proc = _ocrlib("synth", "--out", str(tmp_path), "--profile", "tiny", "--splits", "train=3,val=2",
                   "--quiet", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "train" / "synth.json").read_text())
    tiny = profiles()["tiny"].synth
    assert manifest["config"]["chars"] == tiny.chars and manifest["config"]["max_angle"] == tiny.max_angle
    assert manifest["config"]["effects"] == dataclasses.asdict(tiny.effects)


def test_fonts_lists_the_pool_with_licences():
    proc = _ocrlib("fonts", "--pool", "held_out")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "held_out pool" in lines[0] and "licence" in lines[1]
    assert any("Kalam" in line and "held out" in line and "OFL" in line for line in lines)


def test_synth_fonts_option_picks_the_pool(tmp_path):
    import json

    from ocrlib.fonts import HELD_OUT

    proc = _ocrlib("synth", "--out", str(tmp_path / "h"), "--n", "6", "--fonts", "held_out",
                   "--quiet", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in (tmp_path / "h" / "meta.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["family"] in HELD_OUT for r in rows)
    bad = _ocrlib("synth", "--out", str(tmp_path / "x"), "--n", "2", "--fonts", "nope")
    assert bad.returncode == 2 and "--fonts" in bad.stderr
