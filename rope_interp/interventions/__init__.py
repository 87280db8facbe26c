"""Interventions and experiments: which pairs (`selection`), reversible edits of q/k
(`ablation`), what a run measures (`measures`), its records and resume keys (`run_store`), result
tables (`results`), the resumable runner (`experiment`), the standard conditions (`conditions`)
and paired contrasts (`contrasts`)."""
