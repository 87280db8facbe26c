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
from typing import Any

from rope_interp.core.spec import RotarySpec
from rope_interp.host import HostModel
from rope_interp.interventions.experiment import RunSettings, settings_from_keywords
from rope_interp.report import sections as _standard_sections  # noqa: F401  (registers them)
from rope_interp.report.context import ReportContext
from rope_interp.report.document import Report, Section
from rope_interp.report.registry import SECTION_BUILDERS, resolve_sections
from rope_interp.report.render import library_versions

# The keyword arguments `build_report` took before `settings` (deprecated) → their field.
_OLD_KEYWORDS = {
    "batch_size": "batch_size",
    "seed": "seed",
    "progress": "progress",
    "n_bootstrap": "n_boot",
}


def build_report(
    model: HostModel,
    corpus,
    ablation_corpus=None,
    *,
    analysis_corpus=None,
    sections: Sequence[str] | None = None,
    meta: dict[str, str] | None = None,
    title: str = "How this model uses its rotary frequencies",
    settings: RunSettings | None = None,
    model_name: str | None = None,
    started: float | None = None,
    on_section: Callable[[Section], None] | None = None,
    **deprecated: Any,
) -> Report:
    """Run the section builders on `model` and `corpus` and return the `Report`.

    Args:
        ablation_corpus: windows used by the ablation sections (default: `corpus`).
        analysis_corpus: windows for the attention-pattern analyses (default:
            `ablation_corpus`).
        sections: names from `SECTION_BUILDERS` to run (default all, in order).
        meta: extra key/value lines for the top of the report (the corpus, the command, ...).
        settings: batch size, seed (window draws, random controls, bootstrap), bootstrap
            resamples (`n_boot`) and progress, as a `RunSettings` (default `RunSettings()`);
            the older keywords `batch_size`, `seed`, `progress`, `n_bootstrap` still work
            with a `DeprecationWarning`, but not together with `settings`.
        model_name: the name the model was loaded by, for the "model" line (default: its
            config's `model_name`).
        started: `time.perf_counter()` when the run began, for the "run time" line, so that
            it counts the model loading (default: when this call began).
        on_section: called after each section is built (e.g. to print progress).
    """
    settings = settings_from_keywords(settings, deprecated, "build_report", _OLD_KEYWORDS)
    chosen = resolve_sections(sections)
    began = time.perf_counter()
    spec = RotarySpec.from_model(model)
    ctx = ReportContext(
        model=model,
        spec=spec,
        corpus=corpus,
        ablation_corpus=ablation_corpus if ablation_corpus is not None else corpus,
        analysis_corpus=analysis_corpus,
        settings=settings,
    )
    if ctx.analysis_corpus is None:
        ctx.analysis_corpus = ctx.ablation_corpus
    report = Report(title=title)
    report.meta.update({"model": model_line(model, model_name), **(meta or {})})
    report.meta.setdefault("rotary", spec.summary())
    report.meta.setdefault("corpus", corpus.describe())
    report.meta.setdefault("seed", str(settings.seed))
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
    report.meta["generated"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if started is None:
        elapsed = time.perf_counter() - began
        report.meta["run time"] = (
            f"{elapsed:.0f} s (analyses and ablations, model loading excluded)"
        )
    else:
        elapsed = time.perf_counter() - started
        report.meta["run time"] = f"{elapsed:.0f} s in all (model loading included)"
    return report


def model_line(model: HostModel, name: str | None = None) -> str:
    """The report's "model" line: the name it was loaded by, its kind, size, device, dtype."""
    cfg = model.cfg
    name = name or getattr(cfg, "model_name", None) or "model"
    dtype = str(getattr(cfg, "dtype", "")).removeprefix("torch.")
    return (
        f"{name} as a {type(model).__name__} ({cfg.n_layers} layers, {cfg.n_heads} heads, "
        f"d_model {cfg.d_model}) on {cfg.device}, {dtype}"
    )


def meta_json(report: Report) -> str:
    """The metadata as JSON (handy for tests and scripts)."""
    return json.dumps(report.meta, indent=1)
