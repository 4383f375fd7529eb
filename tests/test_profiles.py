"""ocrlib.profiles.with_settings: a profile with any of its settings changed (benchmarks' --set)."""

from __future__ import annotations

import pytest

from ocrlib.profiles import profiles, with_settings


def test_each_section_changes_only_what_it_names_and_the_original_is_untouched() -> None:
    base = profiles()["laptop"]
    prof = with_settings(base, ["encoder.bidirectional=true", "sizes.train=96000",
                                "synth.clean_fraction=0.1", "effects.scene=0.3",
                                "train.lr=0.001", "backbone.width=24", "model.width=256",
                                "synth.vertical_margin=[0, 0.4]", "encoder.scan=fast"])
    assert prof.model.encoder.bidirectional is True and prof.model.encoder.scan == "fast"
    assert prof.model.encoder.d_model == base.model.encoder.d_model
    assert prof.sizes == {**base.sizes, "train": 96000}
    assert prof.synth.clean_fraction == 0.1 and prof.synth.effects.scene == 0.3
    assert prof.synth.effects.photo == base.synth.effects.photo
    assert prof.synth.vertical_margin == (0, 0.4)  # a JSON list becomes the tuple the field holds
    assert prof.train.lr == 0.001 and prof.train.budget == base.train.budget
    assert prof.model.backbone.width == 24 and prof.model.width == 256
    # the profile it was made from keeps its settings
    assert base.model.encoder.bidirectional is False and base.sizes["train"] == 48000
    assert base.synth.clean_fraction == 0.25 and base.model.backbone.width == 32
    assert with_settings(base, []) == base


@pytest.mark.parametrize("setting, says", [
    ("encoder.bidirectionl=true", "EncoderConfig has no setting 'bidirectionl'; it has kind"),
    ("bidirectional=true", "expected SECTION.KEY=VALUE"),
    ("encoder.bidirectional", "expected SECTION.KEY=VALUE"),
    ("decoder.beam=5", "unknown section 'decoder'; sections are model, backbone"),
    ("model.encoder=1", "ModelConfig has no setting 'encoder'"),
    ("sizes.holdout=10", "sizes are whole numbers of lines for the splits train, val, test"),
    ("sizes.train=1.5", "sizes are whole numbers"),
    ("sizes.train=true", "sizes are whole numbers"),
])
def test_a_bad_setting_is_named_with_what_was_expected(setting: str, says: str) -> None:
    with pytest.raises(ValueError, match="setting") as err:
        with_settings(profiles()["laptop"], [setting])
    assert says in str(err.value)
