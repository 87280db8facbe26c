"""rope-interp: see and test how language models use Rotary Positional Encodings.

The names users type, in one place::

    import rope_interp as ri

    model = ri.load_model("smollm2-135m")          # or any rotary HookedTransformer
    spec = ri.RotarySpec.from_model(model)
    cap = ri.capture(model, tokens, layers=[3])
    per_pair, pass_through = ri.score_contributions(cap.q(3), cap.k(3), spec, layer=3)

Each name is imported from its module on first use (PEP 562), so `import rope_interp` stays
cheap and importing one module never pulls in the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rope_interp.utils.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # models and corpora
    "load_model": "rope_interp.loading.models",
    "load_corpus": "rope_interp.loading.data",
    "Corpus": "rope_interp.loading.data",
    # rotary geometry and pairs
    "RotarySpec": "rope_interp.core.spec",
    "to_pairs": "rope_interp.core.pairs",
    "from_pairs": "rope_interp.core.pairs",
    "pair_norms": "rope_interp.core.pairs",
    "pair_angles": "rope_interp.core.pairs",
    "expand_kv_heads": "rope_interp.core.pairs",
    "score_contributions": "rope_interp.core.pairs",
    # capture and statistics
    "capture": "rope_interp.core.capturing",
    "from_cache": "rope_interp.core.capturing",
    "RotaryCapture": "rope_interp.core.capturing",
    "hook_name": "rope_interp.core.capturing",
    "collect_pair_stats": "rope_interp.core.stats",
    "PairStats": "rope_interp.core.stats",
    # long context
    "long_context_stats": "rope_interp.analysis.long_context",
    "length_sweep": "rope_interp.analysis.length_sweep",
    "LengthSweep": "rope_interp.analysis.length_sweep",
    "LongContextStats": "rope_interp.analysis.long_context",
    "angle_coverage": "rope_interp.analysis.angle_coverage",
    "cycle_boundaries": "rope_interp.analysis.angle_coverage",
    # interventions and experiments
    "Intervention": "rope_interp.interventions.ablation",
    "PairSelection": "rope_interp.interventions.selection",
    "select_pairs": "rope_interp.interventions.selection",
    "select_band": "rope_interp.interventions.selection",
    "select_random": "rope_interp.interventions.selection",
    "p_rope": "rope_interp.interventions.ablation",
    "position_shift": "rope_interp.interventions.ablation",
    "Condition": "rope_interp.interventions.experiment",
    "RunSettings": "rope_interp.interventions.experiment",
    "ExperimentResult": "rope_interp.interventions.results",
    "run_experiment": "rope_interp.interventions.experiment",
    # the report
    "build_report": "rope_interp.report",
    # errors
    "RopeInterpError": "rope_interp.errors",
    "HooksDidNotFire": "rope_interp.errors",
    "UnsupportedModel": "rope_interp.errors",
}

__all__ = [
    "Condition",
    "Corpus",
    "ExperimentResult",
    "HooksDidNotFire",
    "Intervention",
    "LengthSweep",
    "LongContextStats",
    "PairSelection",
    "PairStats",
    "RopeInterpError",
    "RotaryCapture",
    "RotarySpec",
    "RunSettings",
    "UnsupportedModel",
    "angle_coverage",
    "build_report",
    "capture",
    "collect_pair_stats",
    "cycle_boundaries",
    "expand_kv_heads",
    "from_cache",
    "from_pairs",
    "hook_name",
    "length_sweep",
    "load_corpus",
    "load_model",
    "long_context_stats",
    "p_rope",
    "pair_angles",
    "pair_norms",
    "position_shift",
    "run_experiment",
    "score_contributions",
    "select_band",
    "select_pairs",
    "select_random",
    "to_pairs",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from rope_interp.analysis.angle_coverage import angle_coverage, cycle_boundaries
    from rope_interp.analysis.length_sweep import LengthSweep, length_sweep
    from rope_interp.analysis.long_context import LongContextStats, long_context_stats
    from rope_interp.core.capturing import RotaryCapture, capture, from_cache, hook_name
    from rope_interp.core.pairs import (
        expand_kv_heads,
        from_pairs,
        pair_angles,
        pair_norms,
        score_contributions,
        to_pairs,
    )
    from rope_interp.core.spec import RotarySpec
    from rope_interp.core.stats import PairStats, collect_pair_stats
    from rope_interp.errors import HooksDidNotFire, RopeInterpError, UnsupportedModel
    from rope_interp.interventions.ablation import Intervention, p_rope, position_shift
    from rope_interp.interventions.experiment import Condition, RunSettings, run_experiment
    from rope_interp.interventions.results import ExperimentResult
    from rope_interp.interventions.selection import (
        PairSelection,
        select_band,
        select_pairs,
        select_random,
    )
    from rope_interp.loading.data import Corpus, load_corpus
    from rope_interp.loading.models import load_model
    from rope_interp.report import build_report
