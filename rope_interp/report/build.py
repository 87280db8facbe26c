"""Building the standard report: run the registered section builders on a model and corpus.

A builder that fails becomes a section stating the error, so one broken analysis never costs
the rest of the report.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import traceback
from collections.abc import Callable, Sequence

from rope_interp.core.spec import RotarySpec
from rope_interp.report import sections as _standard_sections  # noqa: F401  (registers them)
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Report, Section
from rope_interp.report.registry import SECTION_BUILDERS, resolve_sections
from rope_interp.report.render import library_versions


def build_report(
    model,
    corpus,
    ablation_corpus=None,
    *,
    analysis_corpus=None,
    sections: Sequence[str] | None = None,
    meta: dict[str, str] | None = None,
    title: str = "How this model uses its rotary frequencies",
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    n_bootstrap: int = 1000,
    on_section: Callable[[Section], None] | None = None,
) -> Report:
    """Run the section builders on `model` and `corpus` and return the `Report`.

    Args:
        ablation_corpus: windows used by the ablation sections (default: `corpus`).
        analysis_corpus: windows for the attention-pattern analyses (default:
            `ablation_corpus`).
        sections: names from `SECTION_BUILDERS` to run (default all, in order).
        meta: extra key/value lines for the top of the report (model name, seed, ...).
        on_section: called after each section is built (e.g. to print progress).
    """
    chosen = resolve_sections(sections)
    started = time.perf_counter()
    spec = RotarySpec.from_model(model)
    ctx = ReportContext(
        model=model,
        spec=spec,
        corpus=corpus,
        ablation_corpus=ablation_corpus if ablation_corpus is not None else corpus,
        analysis_corpus=analysis_corpus,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        n_bootstrap=n_bootstrap,
    )
    if ctx.analysis_corpus is None:
        ctx.analysis_corpus = ctx.ablation_corpus
    report = Report(title=title)
    report.meta.update(meta or {})
    cfg = model.cfg
    report.meta.setdefault(
        "model",
        f"{getattr(cfg, 'model_name', 'model')} ({cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"d_model {cfg.d_model}) on {cfg.device}, {str(cfg.dtype).removeprefix('torch.')}",
    )
    report.meta.setdefault("rotary", spec.summary())
    report.meta.setdefault("corpus", corpus.describe())
    report.meta.setdefault("seed", str(seed))
    report.meta.setdefault("libraries", library_versions())
    for name in chosen:
        section_title, builder = SECTION_BUILDERS[name]
        t0 = time.perf_counter()
        try:
            result = builder(ctx)
        except Exception as error:  # one failed analysis must not cost the whole report
            result = Section(
                title=section_title,
                error=f"{type(error).__name__}: {error}",
                details=traceback.format_exc(limit=8),
            )
        for section in [result] if isinstance(result, Section) else list(result):
            section.seconds = (
                time.perf_counter() - t0 if section.seconds is None else section.seconds
            )
            report.add(section)
            if on_section is not None:
                on_section(section)
    elapsed = time.perf_counter() - started
    report.meta["generated"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report.meta["run time"] = f"{elapsed:.0f} s (analyses and ablations, model loading excluded)"
    return report


def meta_json(report: Report) -> str:
    """The metadata as JSON (handy for tests and scripts)."""
    return json.dumps(report.meta, indent=1)
