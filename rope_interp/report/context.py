"""What the section builders share while one report is built: the model with its spec and
backend, bound once, the corpora and the cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rope_interp.core.backends.base import Backend
from rope_interp.core.spec import RotarySpec
from rope_interp.core.stats import collect_pair_stats
from rope_interp.interventions.experiment import RunSettings


@dataclass
class ReportContext:
    """What section builders share: the model, its spec, corpora and cached results.

    Attributes:
        spec: the model's `RotarySpec`, read once by `build_report` and bound to the model;
            builders pass it down (`spec=ctx.spec`) so no analysis reads it again, and its
            `backend` says where the model's q/k are read.
        corpus: windows for the streaming statistics (usage, outliers); `analysis_corpus`
            fewer windows for the analyses that decompose every attention score (positional
            heads, sinks, spectra, massive values); `ablation_corpus` the windows for the
            interventions (each condition costs a forward pass over them).
        settings: batch size, seed, bootstrap resamples and progress, for every builder
            (`batch_size`, `seed`, `n_bootstrap`, `progress` read from it) and whole for the
            ablations' `run_experiment`.
        cache: results shared between builders (e.g. the pair statistics), by name.
    """

    model: Any
    spec: RotarySpec
    corpus: Any
    ablation_corpus: Any
    analysis_corpus: Any = None
    settings: RunSettings = field(default_factory=RunSettings)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def backend(self) -> Backend:
        """The model's backend, the one the spec was read through."""
        return self.spec.backend

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def progress(self) -> bool:
        return self.settings.progress

    @property
    def n_bootstrap(self) -> int:
        return self.settings.n_boot

    @property
    def context(self) -> int:
        return int(self.corpus.tokens.shape[1])

    def pair_stats(self):
        """Streaming per-pair statistics over `corpus` (computed once)."""
        if "pair_stats" not in self.cache:
            self.cache["pair_stats"] = collect_pair_stats(
                self.model,
                self.corpus.batches(self.batch_size),
                progress=self.progress,
                spec=self.spec,
            )
        return self.cache["pair_stats"]

    def analysis_batches(self) -> list:
        """Windows for the analyses that decompose attention scores (fewer: they are costly)."""
        return list(self.analysis_corpus.batches(max(1, self.batch_size // 2)))
