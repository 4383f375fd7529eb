"""An interactive error browser for notebooks (notebook 06).

The logic is plain Python, tested without a frontend: :func:`filter_table` chooses samples,
:class:`BrowserModel` keeps the selection and the position in it, :func:`diff_html` marks
where a reading differs from the truth. :class:`ErrorBrowser` only wires these to
ipywidgets.
"""

from __future__ import annotations

import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .analysis import ERROR_KINDS, save_selection
from .metrics import align

ANY_ERROR, EVERYTHING, CORRECT = "any error", "all samples", "correct"
ANY_FONT = "any font"
ANY_BACKGROUND = "any background"


@dataclass
class Filters:
    """What the browser shows.

    Attributes:
        kind: :data:`ANY_ERROR`, :data:`EVERYTHING`, :data:`CORRECT` or one of
            :data:`ocrlib.analysis.ERROR_KINDS`.
        cer: keep samples whose CER is in ``[low, high]``.
        font: :data:`ANY_FONT` or a font name from the metadata.
        background: :data:`ANY_BACKGROUND` or a background from the metadata (``flat``,
            ``gradient``, ``texture``, ``scene``, ``photo``...: where the errors gather).
    """

    kind: str = ANY_ERROR
    cer: tuple[float, float] = (0.0, math.inf)
    font: str = ANY_FONT
    background: str = ANY_BACKGROUND


def kind_options(table: pd.DataFrame) -> list[str]:
    """The kind filter's choices: the catch-alls, then the error kinds present in the table."""
    present = {k for kinds in table["kinds"] for k in kinds}
    return [ANY_ERROR, EVERYTHING, CORRECT] + [k for k in ERROR_KINDS if k in present]


def font_options(table: pd.DataFrame) -> list[str]:
    """The font filter's choices (just :data:`ANY_FONT` without metadata)."""
    return _options(table, "font", ANY_FONT)


def background_options(table: pd.DataFrame) -> list[str]:
    """The background filter's choices (just :data:`ANY_BACKGROUND` without metadata)."""
    return _options(table, "background", ANY_BACKGROUND)


def _options(table: pd.DataFrame, column: str, anything: str) -> list[str]:
    values = sorted(table[column].dropna().unique()) if column in table.columns else []
    return [anything] + [str(v) for v in values]


def filter_table(table: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """The rows that pass ``filters``, in table order (the index is kept)."""
    if filters.kind == ANY_ERROR:
        keep = ~table["correct"]
    elif filters.kind == EVERYTHING:
        keep = pd.Series(True, index=table.index)
    elif filters.kind == CORRECT:
        keep = table["correct"].astype(bool)
    elif filters.kind in ERROR_KINDS:
        keep = table["kinds"].map(lambda kinds: filters.kind in kinds)
    else:
        raise ValueError(f"unknown error kind {filters.kind!r}; choose from "
                         f"{[ANY_ERROR, EVERYTHING, CORRECT, *ERROR_KINDS]}")
    low, high = filters.cer
    keep &= (table["cer"] >= low) & (table["cer"] <= high)
    for column, value, anything in (("font", filters.font, ANY_FONT),
                                    ("background", filters.background, ANY_BACKGROUND)):
        if value != anything:
            if column not in table.columns:
                raise ValueError(f"the table has no {column} column (no meta.jsonl for this "
                                 "data, or one without it)")
            keep &= table[column] == value
    return table[keep.astype(bool)]


def diff_html(reference: str, prediction: str) -> str:
    """Two lines, truth and reading, with every differing character marked:
    substitutions orange, characters the reading dropped red (struck through in the truth),
    characters it added green."""
    style = {"substitute": "background:#fdb863", "delete": "background:#f4a582;text-decoration:line-through",
             "insert": "background:#a6dba0"}
    ref_html, hyp_html = [], []
    for e in align(reference, prediction):
        r, h = html.escape(e.ref), html.escape(e.hyp)
        if e.kind == "equal":
            ref_html.append(r)
            hyp_html.append(h)
        elif e.kind == "substitute":
            ref_html.append(f'<span style="{style["substitute"]}">{r}</span>')
            hyp_html.append(f'<span style="{style["substitute"]}">{h}</span>')
        elif e.kind == "delete":
            ref_html.append(f'<span style="{style["delete"]}">{r}</span>')
        else:
            hyp_html.append(f'<span style="{style["insert"]}">{h}</span>')
    font = "font-family:monospace;font-size:15px"
    return (f'<div style="{font}">truth&nbsp;{"".join(ref_html) or "∅"}</div>'
            f'<div style="{font}">read&nbsp;&nbsp;{"".join(hyp_html) or "∅"}</div>')


def describe(row: pd.Series) -> str:
    """HTML for one sample: the diff, its scores, its metadata and beam's alternatives."""
    parts = [diff_html(row["reference"], row["prediction"])]
    facts = [f"CER {row['cer']:.3f}"]
    if row.get("confidence") is not None and not pd.isna(row.get("confidence")):
        facts.append(f"confidence {row['confidence']:.3f}")
    if row["kinds"]:
        facts.append("errors: " + ", ".join(row["kinds"]))
    for f, fmt in (("font", "{}"), ("angle", "{:+.1f}°"), ("blur", "blur {:.2f}"), ("noise", "noise {:.1f}")):
        v = row.get(f)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            facts.append(fmt.format(v))
    parts.append(f"<div>{html.escape(' · '.join(facts))}</div>")
    alts = row.get("alternatives") or []
    if len(alts):
        parts.append("<div>beam's other readings: " + ", ".join(
            f"<code>{html.escape(t) or '∅'}</code> {p:.3f}" for t, p in alts) + "</div>")
    return "\n".join(parts)


@dataclass
class BrowserModel:
    """The browser's state without any widget: the table, the filters, the selection and
    the position in it."""

    table: pd.DataFrame
    filters: Filters = field(default_factory=Filters)
    position: int = 0

    def __post_init__(self) -> None:
        self.selection = filter_table(self.table, self.filters)

    def set_filters(self, **changes: Any) -> pd.DataFrame:
        """Change some filters (``kind=``, ``cer=``, ``font=``, ``background=``); goes back to
        the first sample."""
        self.filters = Filters(**{**self.filters.__dict__, **changes})
        self.selection = filter_table(self.table, self.filters)
        self.position = 0
        return self.selection

    def step(self, delta: int) -> int:
        """Move by ``delta`` samples, wrapping around; returns the new position."""
        if len(self.selection):
            self.position = (self.position + delta) % len(self.selection)
        return self.position

    def current(self) -> pd.Series | None:
        """The sample on show, or None when the selection is empty."""
        if not len(self.selection):
            return None
        return self.selection.iloc[self.position]

    def status(self) -> str:
        n = len(self.selection)
        return f"{self.position + 1} of {n}" if n else "no sample matches the filters"

    def save(self, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Save the current selection as a labelled folder (see :func:`save_selection`)."""
        if not len(self.selection):
            raise ValueError("nothing to save: no sample matches the filters")
        return save_selection(self.selection, out, overwrite=overwrite)


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (and closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


class ErrorBrowser:
    """ipywidgets front end to :class:`BrowserModel`.

    Shows, per sample, the truth and reading with differences marked, its scores and
    metadata, beam search's alternative readings and (given ``alignment_view``, a function
    from a table row to a matplotlib figure) the CTC alignment view. Display
    :attr:`widget`. CSS classes ``ocrlib-browser``, ``ocrlib-kind``, ``ocrlib-sample`` and
    ``ocrlib-status`` let browser tests find the parts.
    """

    def __init__(self, table: pd.DataFrame, alignment_view: Any = None,
                 save_to: str | os.PathLike[str] = "data/selection") -> None:
        import ipywidgets as w

        self.model = BrowserModel(table)
        self.alignment_view = alignment_view
        finite = table["cer"][table["cer"].map(math.isfinite)]
        top = max(1.0, float(finite.max()) if len(finite) else 1.0)
        self.kind = w.Dropdown(options=kind_options(table), value=ANY_ERROR, description="errors")
        self.kind.add_class("ocrlib-kind")
        self.cer = w.FloatRangeSlider(value=(0.0, top), min=0.0, max=top, step=0.05,
                                      description="CER", readout_format=".2f")
        self.font = w.Dropdown(options=font_options(table), value=ANY_FONT, description="font")
        self.background = w.Dropdown(options=background_options(table), value=ANY_BACKGROUND,
                                     description="background")
        self.prev = w.Button(description="◀ previous")
        self.next = w.Button(description="next ▶")
        self.status = w.Label()
        self.status.add_class("ocrlib-status")
        self.sample = w.HTML()
        self.sample.add_class("ocrlib-sample")
        self.image = w.Image(format="png")
        self.folder = w.Text(value=str(save_to), description="save to")
        self.save = w.Button(description="save selection", icon="save")
        self.message = w.HTML()
        for control in (self.kind, self.cer, self.font, self.background):
            control.observe(self._on_filter, names="value")
        self.prev.on_click(lambda _: self._move(-1))
        self.next.on_click(lambda _: self._move(1))
        self.save.on_click(self._on_save)
        self.widget = w.VBox([
            w.HBox([self.kind, self.font, self.background]), self.cer,
            w.HBox([self.prev, self.next, self.status]),
            self.sample, self.image, w.HBox([self.folder, self.save]), self.message,
        ])
        self.widget.add_class("ocrlib-browser")
        self.model.set_filters(cer=(0.0, math.inf))
        self._render()

    def _on_filter(self, _: Any) -> None:
        low, high = self.cer.value
        high = math.inf if high >= self.cer.max else high  # the top of the slider means "and above"
        self.model.set_filters(kind=self.kind.value, cer=(low, high), font=self.font.value,
                               background=self.background.value)
        self._render()

    def _move(self, delta: int) -> None:
        self.model.step(delta)
        self._render()

    def _on_save(self, _: Any) -> None:
        try:
            out = self.model.save(self.folder.value, overwrite=False)
            self.message.value = f"saved {len(self.model.selection)} samples to <code>{html.escape(str(out))}</code>"
        except (OSError, ValueError) as err:
            self.message.value = f'<span style="color:#b2182b">{html.escape(str(err))}</span>'

    def _render(self) -> None:
        self.status.value = self.model.status()
        row = self.model.current()
        if row is None:
            self.sample.value, self.image.value = "<i>no sample matches the filters</i>", b""
            return
        self.sample.value = f'<div title="{html.escape(row["path"])}">{describe(row)}</div>'
        if self.alignment_view is not None:
            self.image.value = figure_png(self.alignment_view(row))
        else:
            self.image.value = Path(row["path"]).read_bytes()
