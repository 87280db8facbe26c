"""A lint: rope-interp reads tensor values into Python/numpy only at a result boundary.

`.numpy()` fails on a CUDA tensor, and `.item()` / `.tolist()` on one stall the device. So every
call of them in the package must either read a tensor just moved to the CPU (`.cpu().numpy()`)
or be listed below with the reason the tensor is on the CPU there (or why a sync is fine). A new
call that is neither fails this test: move the value with `.cpu()` at the boundary, or add it
here with its reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import rope_interp

PACKAGE = Path(rope_interp.__file__).parent
READ = re.compile(r"\.(numpy|item|tolist)\(\)")
AFTER_CPU = re.compile(r"\.cpu\(\)\.(numpy|item|tolist)\(\)")

_THETAS = "spec.thetas is float64 on the CPU by construction (RotarySpec.__post_init__)"
_CPU_ACC = "built from values already moved with .cpu() a few lines above"
_SYNC_OK = "a scalar read once per call (load-time check or error message): any device works"
_NUMPY = "a numpy array (metric sums), not a tensor"
_CHECK = "family checks compare CPU models once (a scalar per check)"
_GEOMETRY = "report/sections/geometry.py"

# (file relative to the package, text on the line, reason)
ALLOWED: list[tuple[str, str, str]] = [
    ("interventions/ablation.py", "(anyof & ~allof).nonzero()[0].tolist()", _SYNC_OK),
    (_GEOMETRY, '"theta_0": thetas[:, 0].numpy()', _THETAS),
    (_GEOMETRY, '"theta_last": thetas[:, -1].numpy()', _THETAS),
    (_GEOMETRY, '"wavelength_max": (2 * math.pi / thetas[:, -1]).numpy()', _THETAS),
    (_GEOMETRY, '"partial_cycle_pairs": partial.numpy()', _THETAS + " (partial_cycle_mask)"),
    (_GEOMETRY, '"half_cycle_pairs": half.numpy()', _THETAS + " (partial_cycle_mask)"),
    (_GEOMETRY, "figure = plot_wavelengths(thetas.numpy(), length)", _THETAS),
    ("interventions/experiment.py", "state.losses.extend(losses.tolist())", _CPU_ACC),
    ("interventions/experiment.py", "state.losses_base.extend(clean.losses.tolist())", _CPU_ACC),
    (
        "interventions/experiment.py",
        '"sums": {m: v.tolist() for m, v in state.sums.items()}',
        _NUMPY,
    ),
    (
        "interventions/experiment.py",
        '"base_sums": {m: v.tolist() for m, v in state.base_sums.items()}',
        _NUMPY,
    ),
    ("interventions/results.py", "into[table][metric] = total.tolist()", _NUMPY),
    ("loading/data.py", "for i in picks.tolist()])", "a CPU randperm of window indices"),
    (
        "utils/fingerprint.py",
        "return memoryview(flat.view(torch.uint8).numpy().data)",
        "flat is .cpu()'d",
    ),
    (
        "utils/fingerprint.py",
        "rows = tokens.detach().cpu().to(torch.int64).numpy()",
        "after .cpu()",
    ),
    ("utils/fingerprint.py", "return repr(value.item())", "a numpy scalar, not a tensor"),
    ("core/stats.py", "for row in spec.thetas.tolist()]", _THETAS),
    ("core/stats.py", "(int(v) for v in seen.tolist())", _SYNC_OK + " (after the all-reduce)"),
    ("testing/family_check.py", "(ours - theirs).abs().max().item()}", _CHECK),
    ("testing/family_check.py", "((spec.thetas[layer] - ref).abs() / ref).max().item())", _CHECK),
    ("testing/family_check.py", "dec = max(dec, rel.item())", _CHECK),
    ("testing/family_check.py", "(diff.abs().max() / logit[valid].abs().max()).item())", _CHECK),
    ("interventions/run_store.py", "return value.item()", "a numpy scalar for JSON, not a tensor"),
    (
        "interventions/run_store.py",
        "return value.tolist()",
        "JSON boundary: tolist() copies from any device",
    ),
    (
        "core/backends/bridge_geometry.py",
        "errors[layout] = (ours - theirs).abs().max().item()",
        _SYNC_OK,
    ),
    (
        "core/backends/bridge_support.py",
        "err = (ours - rotated.float()).abs().max().item()",
        _SYNC_OK,
    ),
    (
        "core/backends/bridge_support.py",
        "tol = precision * max(1.0, pre.float().abs().max().item())",
        _SYNC_OK,
    ),
    ("analysis/usage.py", '"layer": index[:, 0].numpy()', "index built on the CPU"),
    ("analysis/usage.py", '"head": index[:, 1].numpy()', "index built on the CPU"),
    ("analysis/usage.py", '"pair": index[:, 2].numpy()', "index built on the CPU"),
    ("analysis/usage.py", '"mean_norm": norms.reshape(-1).double().numpy()', _CPU_ACC),
    ("analysis/usage.py", '"share": share.reshape(-1).double().numpy()', _CPU_ACC),
    ("analysis/usage.py", '"theta": theta.numpy()', _THETAS),
    ("analysis/usage.py", '"wavelength": (2 * torch.pi / theta).numpy()', _THETAS),
    ("analysis/fourier.py", '"freq": freqs[idx].numpy()', _CPU_ACC),
    ("analysis/fourier.py", '"power": p[idx].numpy()', _CPU_ACC),
    ("analysis/fourier.py", '"power_share": (p[idx] / total).numpy()', _CPU_ACC),
    ("analysis/fourier.py", "f = (thetas.double() / (2 * math.pi)).tolist()", _THETAS),
    ("analysis/spectral.py", "rho = spearman(a.numpy(), m.numpy())", _CPU_ACC),
    ("analysis/decay.py", '"distance": distance.numpy()', "reference curve: CPU by design"),
    ("analysis/decay.py", '"ones": ones.numpy()', "reference curve: CPU by design"),
    ("analysis/decay.py", '"gaussian_mean": scores.mean(0).numpy()', "reference: CPU"),
    ("analysis/decay.py", '"gaussian_se": (scores.std(0) / n_samples**0.5).numpy()', "CPU"),
    ("analysis/outliers.py", "v.reshape(-1).numpy() for k, v in columns.items()", _CPU_ACC),
]


def _reads() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line in path.read_text(encoding="utf-8").splitlines():
            code = line.split("#", 1)[0]
            if READ.search(AFTER_CPU.sub("", code)):
                found.append((rel, line.strip()))
    return found


def test_values_leave_the_device_only_at_listed_boundaries():
    unlisted = [
        f"{rel}: {line}"
        for rel, line in _reads()
        if not any(rel == file and text in line for file, text, _ in ALLOWED)
    ]
    assert not unlisted, (
        "Tensor values read without .cpu() outside the allow-list (add .cpu() at the result "
        "boundary, or list the line with the reason its tensor is on the CPU):\n"
        + "\n".join(unlisted)
    )


def test_allow_list_has_no_stale_entries():
    reads = _reads()
    stale = [
        (file, text)
        for file, text, _ in ALLOWED
        if not any(rel == file and text in line for rel, line in reads)
    ]
    assert not stale, f"Allow-list entries that match no line any more: {stale}"


def test_the_lint_catches_a_device_read():
    """The pattern flags a bare read and passes one after .cpu()."""
    assert READ.search(AFTER_CPU.sub("", "x = t.sum().numpy()"))
    assert not READ.search(AFTER_CPU.sub("", "x = t.sum().cpu().numpy()"))
    assert READ.search(AFTER_CPU.sub("", "y = t.cpu().numpy() + u.item()"))
