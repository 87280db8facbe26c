"""The per-batch pair reduction behind `PairStats`, against a float64 complex brute force; its
compiled form against the eager one where CUDA is present, and its fallback everywhere."""

from __future__ import annotations

import inspect

import pytest
import torch

from rope_interp.core import pair_reduction
from rope_interp.core.pair_reduction import compiled_reduce_pairs, reduce_pairs

CASES = [  # (d_head, rotary_dim, half)
    (8, 8, True),
    (8, 8, False),
    (12, 8, True),
    (12, 8, False),
]


def brute_force(x: torch.Tensor, rotary_dim: int, half: bool):
    """Per-pair complex numbers z = re + i·im in float64, reduced with Python-level clarity."""
    x = x.double()
    n_pairs = rotary_dim // 2
    if half:
        z = torch.complex(x[..., :n_pairs], x[..., n_pairs:rotary_dim])
    else:
        z = torch.complex(x[..., 0:rotary_dim:2], x[..., 1:rotary_dim:2])
    norm = z.abs()  # [batch, pos, head, pair]
    fields = [
        z.real.sum((0, 1)),
        z.imag.sum((0, 1)),
        norm.sum((0, 1)),
        (norm**2).sum((0, 1)),
        z[:, 0].real.sum(0),
        z[:, 0].imag.sum(0),
        norm[:, 0].sum(0),
    ]
    pass_sq = (x[..., rotary_dim:] ** 2).sum((0, 1, 3))
    return torch.stack(fields, dim=1), norm.amax((0, 1)), pass_sq


@pytest.mark.parametrize(("d_head", "rotary_dim", "half"), CASES)
def test_reduction_matches_the_complex_brute_force(d_head, rotary_dim, half):
    x = torch.randn(3, 5, 2, d_head, generator=torch.Generator().manual_seed(0)) * 3
    got = reduce_pairs(x, rotary_dim, rotary_dim // 2, half, torch.float64)
    for a, b in zip(got, brute_force(x, rotary_dim, half), strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_reduction_reads_a_non_contiguous_low_precision_batch():
    x = torch.randn(2, 4, 3, 8, generator=torch.Generator().manual_seed(1))
    strided = x.to(torch.bfloat16).transpose(1, 2).contiguous().transpose(1, 2)
    got = reduce_pairs(strided, 8, 4, True, torch.float32)
    want = brute_force(strided.float(), 8, True)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize(("d_head", "rotary_dim", "half"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_reduction_equals_the_eager_one_on_cuda(d_head, rotary_dim, half, dtype):
    x = torch.randn(4, 33, 3, d_head, generator=torch.Generator().manual_seed(2)).to("cuda", dtype)
    eager = reduce_pairs(x, rotary_dim, rotary_dim // 2, half, torch.float32)
    compiled = compiled_reduce_pairs(x, rotary_dim, rotary_dim // 2, half, torch.float32)
    assert pair_reduction.COMPILE_ERROR is None, pair_reduction.COMPILE_ERROR
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_a_compiler_failure_falls_back_to_the_eager_form(monkeypatch, capsys):
    def broken():
        def fail(*args):
            raise RuntimeError("no compiler here")

        return fail

    monkeypatch.setattr(pair_reduction, "_compiled", broken)
    monkeypatch.setattr(pair_reduction, "COMPILE_ERROR", None)
    x = torch.randn(2, 3, 2, 8, generator=torch.Generator().manual_seed(3))
    got = compiled_reduce_pairs(x, 8, 4, False, torch.float64)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("rope-interp: torch.compile") and "no compiler here" in line
    assert pair_reduction.COMPILE_ERROR == "RuntimeError: no compiler here"
    for a, b in zip(got, reduce_pairs(x, 8, 4, False, torch.float64), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("half", [True, False])
def test_the_reduction_traces_as_one_graph(half):
    """What `torch.compile` sees on CUDA, traced here on the CPU without a compiler: one graph
    (no break, also under the tests' shape checks) with the eager form's numbers."""
    traced = torch.compile(
        inspect.unwrap(reduce_pairs), backend="eager", dynamic=True, fullgraph=True
    )
    x = torch.randn(2, 5, 3, 12, generator=torch.Generator().manual_seed(4))
    for a, b in zip(
        traced(x, 8, 4, half, torch.float32),
        reduce_pairs(x, 8, 4, half, torch.float32),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
