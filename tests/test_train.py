import copy
import math

import pytest
import torch

from ocrlib import session as S
from ocrlib.checkpoint import CheckpointMismatchError, load_model, read_checkpoint, save_checkpoint
from ocrlib.model import MambaOCR
from ocrlib.synth import generate_splits
from ocrlib.train import StepSampler, TrainConfig, last_path, profiles, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prof = profiles()["tiny"]
    generate_splits(root, {"train": 24, "val": 8}, seed=0, cfg=prof.synth, workers=1,
                    progress=False)
    return root


def _micro(steps=6, **kw):
    prof = copy.deepcopy(profiles()["tiny"])
    prof.model.encoder.d_model = 32
    prof.train = TrainConfig(steps=steps, batch_size=4, lr=1e-3, eval_every=3, save_every=3,
                             val_limit=8, amp="off", device="cpu", **kw)
    return prof


def _state(path):
    return read_checkpoint(path)["model"]


def test_resume_after_a_kill_ends_where_an_uninterrupted_run_does(data, tmp_path):
    prof = _micro()
    whole = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "a" / "best_m.pth",
                  progress=False)
    part = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "b" / "best_m.pth",
                 progress=False, stop_after=3)
    assert part.step == 3 and read_checkpoint(part.last)["step"] == 3
    resumed = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "b" / "best_m.pth",
                    progress=False, resume=True)
    assert resumed.step == whole.step == 6
    a, b = _state(whole.last), _state(resumed.last)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["val_cer"] for h in resumed.history] == [h["val_cer"] for h in whole.history]


def test_checkpoints_are_safe_to_load_and_the_best_one_is_lean(data, tmp_path):
    prof = _micro(steps=3)
    res = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "best_m.pth",
                progress=False)
    best = torch.load(res.best, weights_only=True)  # no pickled code needed
    assert "optimizer" not in best and "optimizer" in read_checkpoint(res.last)
    model, ckpt = load_model(res.best)
    assert model.charset.chars == profiles()["tiny"].model.charset.chars and not model.training
    assert (tmp_path / "best_m_history.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "best_m_curves.png").stat().st_size > 1000


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "ck.pth"
    save_checkpoint(path, {"config": {}, "model": {"w": torch.ones(3)}, "step": 1})
    before = path.read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"config": {}, "model": {"w": torch.zeros(3)}, "step": 2})
    assert path.read_bytes() == before
    assert read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pth"]  # no temporary file left


def test_a_checkpoint_for_another_model_is_refused(data, tmp_path):
    prof = _micro(steps=3)
    res = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "best_m.pth",
                progress=False)
    other = copy.deepcopy(prof)
    other.model.chars = "0123456789ab"
    with pytest.raises(CheckpointMismatchError, match="chars"):
        train(other.model, other.train, data / "train", data / "val", tmp_path / "best_m.pth",
              progress=False, resume=True)
    with pytest.raises(CheckpointMismatchError, match="encoder.d_model"):
        bigger = copy.deepcopy(prof.model)
        bigger.encoder.d_model = 64
        load_model(res.best, expected=bigger)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: cannot read checkpoint"):
        read_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing.pth")


def test_non_finite_batches_are_skipped_and_counted(data, tmp_path, monkeypatch):
    real = S.ctc_loss
    calls = {"n": 0}

    def sometimes_nan(*args):
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(S, "ctc_loss", sometimes_nan)
    prof = _micro(steps=4)
    res = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "best_m.pth",
                progress=False)
    assert res.skipped_batches == 1 and res.step == 4
    assert all(torch.isfinite(v).all() for v in _state(res.last).values() if v.is_floating_point())


def test_overlapping_validation_set_is_refused(data, tmp_path):
    prof = _micro(steps=1)
    with pytest.raises(ValueError, match="is the training folder"):
        train(prof.model, prof.train, data / "train", data / "train", tmp_path / "b.pth",
              progress=False)


def test_step_sampler_is_a_function_of_seed_and_step():
    full = list(StepSampler(10, 3, seed=1, start=0, total=7))
    assert list(StepSampler(10, 3, seed=1, start=4, total=7)) == full[4:]
    assert sorted(i for b in full[:3] for i in b) == sorted(set(i for b in full[:3] for i in b))
    assert full[:3] != list(StepSampler(10, 3, seed=2, start=0, total=3))


def test_last_path_naming(tmp_path):
    assert last_path(tmp_path / "best_mamba_ocr.pth").name == "last_mamba_ocr.pth"
    assert last_path(tmp_path / "model.pth").name == "model_last.pth"


@pytest.mark.slow
def test_tiny_profile_learns(tmp_path):
    prof = profiles()["tiny"]
    generate_splits(tmp_path, {"train": prof.sizes["train"], "val": prof.sizes["val"]}, seed=0,
                    cfg=prof.synth, progress=False)
    res = train(prof.model, prof.train, tmp_path / "train", tmp_path / "val",
                tmp_path / "ck" / "best_mamba_ocr.pth", progress=False)
    first, best = res.history[0]["val_cer"], res.best_cer
    assert math.isfinite(best) and best < 0.5 and best < first / 2


def test_init_from_starts_from_another_checkpoints_weights_and_refuses_another_model(data, tmp_path):
    from ocrlib.train import train_profile

    prof = _micro(steps=2)
    first = train_profile(prof, data / "train", data / "val", tmp_path / "a" / "best_m.pth",
                          progress=False)
    res = train_profile(prof, data / "train", data / "val", tmp_path / "b" / "best_m.pth",
                        progress=False, init_from=first.last)
    scratch = train(prof.model, prof.train, data / "train", data / "val", tmp_path / "s" / "b.pth",
                    progress=False)
    assert not torch.equal(_state(res.last)["classifier.weight"], _state(scratch.last)["classifier.weight"])
    other = copy.deepcopy(prof.model)
    other.encoder.d_model = 48
    with pytest.raises(CheckpointMismatchError):
        train(other, prof.train, data / "train", data / "val", tmp_path / "o" / "b.pth",
              progress=False, init_from=res.best)


def test_bucketed_batches_hold_similar_widths_and_follow_seed_and_step():
    widths = [(i * 37) % 300 + 10 for i in range(400)]
    full = list(StepSampler(400, 8, seed=3, start=0, total=60, widths=widths, bucket=10))
    assert list(StepSampler(400, 8, seed=3, start=25, total=60, widths=widths, bucket=10)) == full[25:]
    per_epoch = 50
    assert sorted(i for b in full[:per_epoch] for i in b) == list(range(400))  # an epoch: each once
    spread = sum(max(widths[i] for i in b) - min(widths[i] for i in b) for b in full) / len(full)
    plain = list(StepSampler(400, 8, seed=3, start=0, total=60))
    plain_spread = sum(max(widths[i] for i in b) - min(widths[i] for i in b) for b in plain) / len(plain)
    assert spread < plain_spread / 4


def test_the_guided_term_fades_out_and_needs_an_alignment():
    from ocrlib.losses import guided_term

    cfg = TrainConfig(guided_steps=10, guided_weight=2.0)
    logits = torch.randn(2, 6, 5)
    targets = torch.tensor([[0, 1, 0, 2, -100, -100], [3, 0, 0, 4, 0, 0]])
    start = guided_term(logits, targets, 0, cfg)
    half = guided_term(logits, targets, 5, cfg)
    assert float(start) > 0 and abs(float(half) - float(start) / 2) < 1e-5
    assert guided_term(logits, targets, 10, cfg) == 0.0 and guided_term(logits, None, 0, cfg) == 0.0


def test_fixed_width_pads_every_line_and_counts_every_frame(data):
    from ocrlib.data import OCRDataset, ctc_collate

    ds = OCRDataset(data / "train", profiles()["tiny"].model.charset, width=128)
    own = ctc_collate([ds[0], ds[1]])
    fixed = ctc_collate([ds[0], ds[1]], fixed_width=128)
    assert own.images.shape[-1] < 128 and fixed.images.shape[-1] == 128
    assert fixed.frames.tolist() == [32, 32] and own.frames.max() < 32


def test_the_one_cycle_schedule_warms_up_to_the_peak_then_anneals():
    from ocrlib.train import lr_curve

    cfg = TrainConfig(steps=200, lr=1e-3, warmup=0.1)
    lrs = lr_curve(cfg)
    assert lrs[0] == pytest.approx(cfg.lr / 25) and max(lrs) == pytest.approx(cfg.lr)
    assert lrs.index(max(lrs)) == 19 and lrs[-1] < cfg.lr / 1000  # warm-up: steps 0..19


@pytest.mark.parametrize("steps, warmup", [(20, 0.05), (10, 0.1), (100, 0.01), (4, 0.25),
                                           (2, 0.5), (1, 0.05), (1, 1.0), (7, 1.0)])
def test_a_short_run_has_a_schedule_where_torch_would_divide_by_zero(steps, warmup):
    # OneCycleLR divides by the length of its warm-up (zero when it is exactly one step: 20
    # steps at 0.05, a short --steps or budget) and of its annealing (zero for warmup=1.0)
    from ocrlib.train import lr_curve

    lrs = lr_curve(TrainConfig(steps=steps, lr=1e-3, warmup=warmup))
    assert len(lrs) == steps and all(0 < lr <= 1e-3 * (1 + 1e-9) for lr in lrs[:-1] or lrs)
    if steps >= 4:  # it still warms up to the peak and anneals after it
        assert lrs[0] == pytest.approx(1e-3 / 25) and max(lrs) == pytest.approx(1e-3)
        assert lrs[-1] < 1e-3 / 25


def test_stages_hold_every_intermediate_and_the_pipeline_figure_shows_their_shapes():
    import matplotlib

    matplotlib.use("Agg")
    from ocrlib.viz import plot_pipeline

    prof = profiles()["tiny"]
    torch.manual_seed(0)
    model = MambaOCR(prof.model).eval()
    x = torch.randn(2, 3, 32, 96)
    with torch.no_grad():
        parts = model.stages(x)
        assert torch.equal(parts["logits"], model(x))
    assert [tuple(t.shape) for t in parts.values()] == [(2, 3, 32, 96), (2, 24, 512), (2, 24, 128), (2, 24, 63)]
    ax = plot_pipeline(parts, "abc")
    shown = " ".join(t.get_text() for t in ax.texts)
    assert "2×24×512" in shown and "2×24×63" in shown and "'abc'" in shown


def test_training_names_bad_samples_or_goes_on_without_them(tmp_path):
    from ocrlib.folder import DataError

    prof = copy.deepcopy(profiles()["tiny"])
    prof.model.encoder.d_model = 32
    generate_splits(tmp_path / "data", {"train": 8, "val": 4}, seed=0, cfg=prof.synth, workers=1,
                    progress=False)
    with open(tmp_path / "data" / "train" / "labels.txt", "a") as f:
        f.write("images/missing.png\tab\nimages/000000.png\ta$\n")
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=2, save_every=2, amp="off", device="cpu")
    args = (prof.model, cfg, tmp_path / "data/train", tmp_path / "data/val", tmp_path / "m.pth")
    with pytest.raises(DataError, match=r"2 bad samples(.|\n)*labels.txt:9: image file not found"):
        train(*args, progress=False)
    assert train(*args, progress=False, skip_bad=True).step == 2


def test_lines_kept_in_memory_train_exactly_as_lines_loaded_each_time(data, tmp_path):
    """12 steps of 4 over 24 lines: every line is read twice, the second time from the cache;
    a run stopped without the cache resumes with it (it changes no number of the run)."""
    loaded = _micro(steps=12)
    cached = _micro(steps=12, cache_mb=64)
    a = train(loaded.model, loaded.train, data / "train", data / "val", tmp_path / "a" / "b.pth",
              progress=False)
    b = train(cached.model, cached.train, data / "train", data / "val", tmp_path / "b" / "b.pth",
              progress=False)
    train(loaded.model, loaded.train, data / "train", data / "val", tmp_path / "c" / "b.pth",
          progress=False, stop_after=6)
    c = train(cached.model, cached.train, data / "train", data / "val", tmp_path / "c" / "b.pth",
              progress=False, resume=True)
    for other in (b, c):
        assert other.step == a.step == 12
        x, y = _state(a.last), _state(other.last)
        for k in x:
            assert torch.equal(x[k], y[k]), k
        assert [h["val_cer"] for h in other.history] == [h["val_cer"] for h in a.history]
