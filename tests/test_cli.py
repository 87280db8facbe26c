"""The `rope-interp` command: help, user errors (exit 2, one line, no traceback), `report` and
`ablate` on a tiny model, and one run on the real model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rope_interp import cli
from rope_interp.plots.export import find_browser
from tests.helpers import HOST, png_size


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("report", "ablate", "summary", "stats"):
        assert command in text
    assert "start" in text  # tells a newcomer where to begin


@pytest.mark.parametrize("command", ["report", "ablate", "summary", "stats"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--model" in text and "--corpus" in text and "--seed" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "--sections", "usage,nope"], "Unknown report section"),
        (["report", "--out", "report.pdf"], "--out must end in .html"),
        (["ablate", "--out", "x.txt"], "--out must end in .csv or .parquet"),
        (["ablate", "--out", "x.csv", "--sweep", "bands"], "Unknown ablation group"),
        (["ablate", "--out", "x.csv", "--phi", "import os"], "--phi takes a number"),
        (["stats", "--out", "x.txt"], "--out must end in .safetensors"),
    ],
)
def test_user_errors_exit_2_with_one_line(tiny, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rope-interp: error: ") and message in err[0]


def test_user_error_from_the_library_in_a_subprocess(tmp_path):
    """Through the real entry point: a missing corpus file is one line and exit code 2."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from rope_interp.cli import main; sys.exit(main())",
         "summary", "--model", str(tmp_path / "missing.gguf")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("rope-interp: error: ") and "GGUF file not found" in line


def test_report_on_a_tiny_model(tiny, tmp_path, capsys):
    out = tmp_path / "sub" / "report.html"
    argv = ["report", "--out", str(out), "--tokens", "96", "--seq-len", "32",
            "--ablation-tokens", "64", "--bootstrap", "20", "--quiet",
            "--sections", "geometry,usage,outliers,ablation_bands",
            "--save-tables", str(tmp_path / "tables")]  # fmt: skip
    assert cli.main(argv) == 0
    page = out.read_text(encoding="utf-8")
    for text in ("Rotary geometry", "Frequency usage", "Ablation: high vs low", "How to read"):
        assert text in page
    assert "96 for statistics (usage, outliers)" in page
    assert "run time" in page and "libraries" in page
    assert "rope-interp report --out" in page  # the command line is stated
    assert "wrote" in capsys.readouterr().out
    assert any((tmp_path / "tables").glob("*.csv"))


def test_report_html_is_written_after_each_section(tiny, tmp_path, monkeypatch):
    """Stopped during its second section, the report leaves the first one readable, marked as
    in progress."""
    import rope_interp.report.sections  # noqa: F401  (registers the standard sections)
    from rope_interp.report import registry

    title, _ = registry.SECTION_BUILDERS["usage"]

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(registry.SECTION_BUILDERS, "usage", (title, interrupted))
    out = tmp_path / "report.html"
    argv = ["report", "--out", str(out), "--tokens", "64", "--seq-len", "32", "--quiet",
            "--sections", "geometry,usage"]  # fmt: skip
    assert cli.main(argv) == 130  # interrupted
    page = out.read_text(encoding="utf-8")
    assert "Rotary geometry" in page and "Frequency usage" not in page
    assert "in progress: 1 of 2 sections" in page


def test_ablate_writes_tables_and_resumes(tiny, tmp_path, capsys):
    out = tmp_path / "ablate.csv"
    argv = ["ablate", "--out", str(out), "--tokens", "64", "--seq-len", "16",
            "--sweep", "band,sanity", "--random-controls", "1", "--bootstrap", "20",
            "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    summary = pd.read_csv(out)
    assert list(summary.condition) == [
        "zero high 1", "zero low 1", "zero random 1 #1", "position shift +16"
    ]  # fmt: skip
    assert {"delta_loss", "ci_low", "ci_high"} <= set(summary.columns)
    assert abs(summary.set_index("condition").loc["position shift +16", "delta_loss"]) < 1e-4
    heads = pd.read_csv(tmp_path / "ablate_heads.csv")
    assert {"condition", "layer", "head", "kl", "prev"} <= set(heads.columns)
    capsys.readouterr()
    assert cli.main([*argv[:-1]]) == 0  # second run: everything reused
    assert "resumed: 4 condition(s)" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out), summary)
    # A run folder written before rope-interp marked its folders still resumes as its own.
    (markers,) = tmp_path.rglob(".rope-interp")
    markers.unlink()
    assert cli.main([*argv[:-1]]) == 0
    assert "resumed: 4 condition(s)" in capsys.readouterr().err


def test_ablate_recomputes_when_the_bootstrap_changes(tiny, tmp_path, capsys):
    out = tmp_path / "r.csv"
    argv = ["ablate", "--out", str(out), "--tokens", "64", "--seq-len", "16",
            "--sweep", "band", "--random-controls", "1", "--quiet"]  # fmt: skip
    assert cli.main([*argv, "--bootstrap", "200"]) == 0
    wide = pd.read_csv(out)
    capsys.readouterr()
    assert cli.main([*argv, "--bootstrap", "10"]) == 0
    err = capsys.readouterr().err
    assert err.count("(n_boot 200 → 10); recomputing") == 3 and "resumed" not in err
    narrow = pd.read_csv(out)
    assert (narrow.delta_loss == wide.delta_loss).all() and (narrow.ci_low != wide.ci_low).any()


@pytest.mark.real_model
def test_report_on_the_real_model(tmp_path):
    """The one real-model CLI run: a quick subset of the report on the built-in model."""
    out = tmp_path / "real.html"
    argv = ["report", "--out", str(out), "--tokens", "256", "--seq-len", "128",
            "--sections", "geometry,usage,outliers", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    page = out.read_text(encoding="utf-8")
    host = "TransformerBridge" if HOST == "bridge" else "HookedTransformer"
    assert f"smollm2-135m as a {host} (30 layers, 9 heads" in page
    assert "base 100000" in page and "Not computed" not in page


def test_missing_gpu_is_a_user_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert cli.main(["summary", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "rope-interp: error: --device cuda: no CUDA GPU is available here; use --device cpu."
    ]


def test_ablate_writes_parquet(tiny, tmp_path):
    out = tmp_path / "sweep.parquet"
    argv = ["ablate", "--out", str(out), "--tokens", "32", "--seq-len", "16", "--sweep",
            "p-rope", "--p", "1,0.5", "--bootstrap", "10", "--no-attention", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    summary = pd.read_parquet(out)
    assert list(summary.condition) == ["p-RoPE p=1", "p-RoPE p=0.5", "reversed p-RoPE p=0.5"]
    assert summary.set_index("condition").loc["p-RoPE p=1", "delta_loss"] == 0


@pytest.mark.skipif(find_browser() is None, reason="Chromium is not installed (kaleido needs it)")
def test_report_writes_every_figure_as_png(tiny, tmp_path, capsys):
    figures = tmp_path / "fig"
    argv = ["report", "--out", str(tmp_path / "r.html"), "--tokens", "96", "--seq-len", "32",
            "--quiet", "--sections", "geometry,usage", "--figures", str(figures),
            "--format", "png"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    pngs = sorted(figures.glob("*.png"))
    n_figures = int(out.split(" figures)")[0].rsplit(", ", 1)[-1])  # "..., N figures) in ..."
    assert len(pngs) == n_figures >= 2 and f"wrote {n_figures} PNG figures" in out
    assert png_size(pngs[0]) == (1800, 1120)  # 900×560 CSS pixels at scale 2


# ---- one checked settings object per command, handed whole to the command ----------------------
SETTINGS_CASES = {
    "report": (["report", "--out", "r.html", "--batch-size", "3", "--bootstrap", "40",
                "--seed", "5", "--quiet", "--sections", "usage,geometry"], "ReportSettings"),
    "ablate": (["ablate", "--out", "a.csv", "--sweep", "band", "--no-attention", "--seed", "5",
                "--batch-size", "3", "--bootstrap", "40", "--phi=-pi/2"], "AblateSettings"),
    "stats": (["stats", "--out", "s.safetensors", "--tokens", "50k", "--shard", "1/4"],
              "StatsSettings"),
    "summary": (["summary", "--quiet"], "SummarySettings"),
    "merge": (["merge", "--out", "m.safetensors", "a.safetensors", "b.safetensors"],
              "MergeSettings"),
}  # fmt: skip


def _fields(value):
    """Every value inside a settings object, nested settings objects opened."""
    import dataclasses

    for field in dataclasses.fields(value):
        inner = getattr(value, field.name)
        yield inner
        if dataclasses.is_dataclass(inner):
            yield from _fields(inner)


@pytest.mark.parametrize("command", sorted(SETTINGS_CASES))
def test_each_command_gets_one_frozen_settings_object(command, tmp_path, monkeypatch):
    import argparse
    import dataclasses
    import math

    from rope_interp.interventions.experiment import RunSettings

    monkeypatch.chdir(tmp_path)
    argv, kind = SETTINGS_CASES[command]
    args = cli.build_parser().parse_args(argv)
    settings = cli.validate_args(args)
    assert type(settings).__name__ == kind
    assert not any(isinstance(v, argparse.Namespace) for v in _fields(settings))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.out = "elsewhere"
    if command == "report":
        assert settings.sections == ("usage", "geometry")
        assert settings.run_settings() == RunSettings(
            batch_size=3, n_boot=40, seed=5, progress=False
        )
    if command == "ablate":
        assert settings.groups == ("band",) and settings.phases == (-math.pi / 2,)
        assert settings.run_settings(progress=True) == RunSettings(
            batch_size=3, n_boot=40, seed=5, attention=False, progress=True
        )
        assert settings.runs == Path("a.runs") and settings.heads_out == Path("a_heads.csv")
    if command == "stats":
        assert settings.model.tokens == 50_000 and settings.shard == (1, 4)
    if command == "merge":
        assert [p.name for p in settings.inputs] == ["a.safetensors", "b.safetensors"]


def test_loading_gets_the_settings_and_device_and_dtype_are_checked_once(monkeypatch, capsys):
    """`summary` end to end through the real loading code (a tiny model in place of the
    weights): the loader receives the checked `ModelSettings`, `--device`/`--dtype` are
    checked once, and `--quiet` silences progress as on every other command."""
    from rope_interp.cli import loading, options
    from rope_interp.loading import models
    from rope_interp.loading.data import embedded_texts
    from tests.helpers import make_model, small_word_tokenizer

    model = make_model("gqa")
    model.tokenizer = small_word_tokenizer(embedded_texts(), model.cfg.d_vocab)
    asked: list = []
    monkeypatch.setattr(models, "load_model", lambda name, **kw: asked.append(kw) or model)
    checks: list = []
    check = options.check_device_and_dtype
    monkeypatch.setattr(options, "check_device_and_dtype", lambda *a: checks.append(a) or check(*a))
    given: list = []
    load = loading.load_model_and_corpus
    monkeypatch.setattr(
        loading, "load_model_and_corpus", lambda s, d: given.append(s) or load(s, d)
    )
    argv = ["summary", "--tokens", "64", "--seq-len", "16", "--device", "cpu", "--quiet"]
    assert cli.main(argv) == 0
    assert [type(s).__name__ for s in given] == ["ModelSettings"]
    assert checks == [("cpu", "float32")]
    assert asked == [{"device": "cpu", "dtype": "float32", "n_ctx": None, "n_devices": 1}]
    captured = capsys.readouterr()
    assert captured.err == "" and "tokens in" in captured.out


@pytest.mark.parametrize(
    ("extra", "keywords"),
    [
        (["--fraction", "0.9"], {"fraction": 0.9}),
        (["--fraction", "0"], {"fraction": 0.0}),
        (["--sweep", "band,bands"], {"groups": ("band", "bands")}),
        (["--random-controls", "10001"], {"n_random": 10001}),
        (["--random-controls", "-1"], {"n_random": -1}),
    ],
)
def test_ablation_options_follow_the_library_s_one_rule(extra, keywords, tmp_path, monkeypatch,
                                                         capsys):  # fmt: skip
    """`ablate` refuses exactly what `standard_conditions` refuses, in the same words with the
    option's name: the rule is written once."""
    from rope_interp.core.spec import RotarySpec
    from rope_interp.errors import RopeInterpError
    from rope_interp.interventions.conditions import standard_conditions
    from tests.helpers import make_model

    model = make_model("gqa")
    with pytest.raises(RopeInterpError) as raised:
        standard_conditions(model, RotarySpec.from_model(model), **keywords)
    names = {"groups": "--sweep", "fraction": "--fraction", "n_random": "--random-controls"}
    (name,) = keywords
    expected = str(raised.value).replace(name, names[name])
    monkeypatch.chdir(tmp_path)
    assert cli.main(["ablate", "--out", "a.csv", *extra]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"rope-interp: error: {expected}"
