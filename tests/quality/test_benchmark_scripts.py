"""The GPU benchmark scripts, run end to end in their --tiny CPU mode (in this process: they
are plain scripts beside their `common` module)."""

import importlib
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
METHODS = "adaspa,svg"


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def _run(module, tmp_path, capsys, *args):
    out = tmp_path / "result.json"
    argv = ["--tiny", "--methods", METHODS, "--warmup", "0", "--repeats", "1", "--out", str(out)]
    assert module.main([*argv, *args]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def _check_provenance(doc):
    for key in ("gpu", "torch", "triton", "diffusers", "date", "command"):
        assert key in doc
    assert doc["gpu"] == "cpu" and doc["tiny"] is True


def test_e2e_tiny(script, tmp_path, capsys):
    doc, printed = _run(script("e2e"), tmp_path, capsys, "--models", "1.3b")
    _check_provenance(doc)
    (model,) = doc["models"]
    assert model["tokens"] == 192 and model["text_tokens"] == 512
    dense = model["dense"]
    assert dense["median"] > 0 and 0 < dense["attention_share"] < 1 and dense["output_finite"]
    results = {r["method"]: r for r in model["methods"]}
    assert set(results) == {"adaspa", "svg"}
    for result in results.values():
        assert "error" not in result, result
        assert len(result["schedule"]) == doc["num_steps"] == 50
        assert result["speedup"] > 0 and result["amdahl_limit"] >= 1.0
        assert all(step["matches"] for step in result["steps"].values()), result["steps"]
    # AdaSpa at 50 steps: the last warm-up step keeps its LSE, the first search at step 10 is
    # one dense pass with the mass fused in, a cached search later, reuse between.
    assert list(results["adaspa"]["steps"]) == ["dense-lse", "search", "reuse", "cached-search"]
    assert results["adaspa"]["schedule"][:11] == ["dense"] * 9 + ["dense-lse", "search"]
    assert "| dense |" in printed and "Amdahl limit" in printed


def test_e2e_tiny_in_8_bits(script, tmp_path, capsys):
    """``--precision 8bit --dense-precision 8bit`` reaches the methods: both options in the
    results, the dense steps on our 8-bit kernel (``dense-8bit``), the baseline unchanged."""
    out = tmp_path / "result.json"
    argv = ["--tiny", "--models", "1.3b", "--methods", "svg", "--repeats", "1", "--warmup", "0"]
    argv += ["--precision", "8bit", "--dense-precision", "8bit", "--out", str(out)]
    assert script("e2e").main(argv) == 0
    doc = json.loads(out.read_text())
    assert (doc["precision"], doc["dense_precision"]) == ("8bit", "8bit")
    (svg,) = doc["models"][0]["methods"]
    assert "error" not in svg, svg
    assert svg["options"]["precision"] == svg["options"]["dense_precision"] == "8bit"
    assert svg["schedule"][:11] == ["dense-8bit"] * 10 + ["svg"]
    assert script("e2e").results_prefix("e2e", script("e2e").model_parser("").parse_args(argv)) == (
        "e2e-8bit-dense8bit"
    )


def test_e2e_method_options_reach_their_method_only(script, tmp_path, capsys):
    doc, _ = _run(script("e2e"), tmp_path, capsys, "--models", "1.3b", "-o", "svg.density=0.4")
    options = {r["method"]: r["options"] for r in doc["models"][0]["methods"]}
    assert options["svg"]["density"] == 0.4 and "density" not in options["adaspa"]
    args = script("e2e").model_parser("").parse_args(["-o", "svg.density=0.4"])
    assert script("e2e").results_prefix("e2e", args) == "e2e-svg.density-0.4"
    with pytest.raises(SystemExit):
        _run(script("e2e"), tmp_path, capsys, "-o", "radial.decay_factor=1")
    assert "not in --methods" in capsys.readouterr().err


def test_attention_layer_tiny(script, tmp_path, capsys):
    doc, printed = _run(script("attention_layer"), tmp_path, capsys)
    _check_provenance(doc)
    (layout,) = doc["layouts"]
    assert [case["case"] for case in layout["cases"]] == ["random", "structured"]
    for case in layout["cases"]:
        assert case["dense"]["median"] > 0
        for result in case["methods"]:
            assert "error" not in result, result
            for step in result["steps"].values():
                assert step["matches"] and step["median"] > 0
                assert 0 < step["density"] <= 1 and step["relative_error"] >= 0
    assert "| structured |" in printed


def test_attention_layer_tiny_svg2_overhead(script, tmp_path, capsys):
    doc, printed = _run(script("attention_layer"), tmp_path, capsys, "--methods", "svg2")
    for case in doc["layouts"][0]["cases"]:
        (result,) = case["methods"]
        assert "error" not in result, result
        assert list(result["steps"]) == ["svg2-init", "svg2"]
        overhead = case["svg2_overhead"]
        parts = ("cluster", "arrange", "kernel_with_perm", "kernel")
        assert all(overhead[key] > 0 for key in ("attend", *parts))
        assert 0 < overhead["density"] <= 1
    assert "k-means ms" in printed


def test_svg2_kmeans_probe_tiny(script, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS / "probes"))
    out = tmp_path / "probe.json"
    assert script("svg2_kmeans").main(["--tiny", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["gpu"] == "cpu" and doc["tiny"] is True
    (layout,) = doc["layouts"]
    for part in ("q", "k"):
        iteration = layout["iteration"][part]
        assert iteration["torch_ms"] > 0 and iteration["lloyd_step_ms"] > 0
        assert iteration["labels_agree"] == 1.0  # the CPU runs the reference twice
        assert iteration["assign_ms"] == {}  # Triton-only timings
    svg2 = layout["svg2"]
    assert (svg2["q_clusters"], svg2["k_clusters"]) == (192, 192)  # capped at 192 tokens
    assert svg2["kernel_ms"] > 0 and svg2["kernel_presorted_ms"] > 0
    assert svg2["permute_ms"] == pytest.approx(
        svg2["kernel_ms"] - svg2["kernel_presorted_ms"], abs=1e-3
    )
    assert svg2["overhead_ms"] == pytest.approx(
        svg2["cluster_ms"] + svg2["arrange_ms"] + max(svg2["permute_ms"], 0.0), abs=1e-3
    )
    assert 0.2 <= svg2["attention_0.2_density"] < 0.5 and 0 < svg2["density"] <= 1


@pytest.mark.parametrize("name", ["e2e", "attention_layer"])
def test_scripts_reject_bad_arguments(script, name):
    with pytest.raises(SystemExit, match="--repeats"):
        script(name).main(["--tiny", "--repeats", "0"])


def test_gpu_smoke_tiny_checks_every_method_and_kernel(script, tmp_path):
    out = tmp_path / "smoke.json"
    assert script("gpu_smoke").main(["--tiny", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["passed"] and doc["failed"] == 0 and doc["dit_sparse_tree"] is None
    checked = {(c["method"], c["check"].split()[0]) for c in doc["checks"]}
    assert {
        ("radial", "block_sparse_attention"),
        ("svg", "masked_row_errors"),
        ("svg", "block_sparse_attention"),
        ("adaspa", "dense_attention_with_lse"),
        ("adaspa", "dense_attention_with_mass"),
        ("adaspa", "block_attention_mass"),
        ("adaspa", "rank_key_blocks"),
        ("adaspa", "kept_blocks_ascending"),
        ("adaspa", "block_sparse_attention"),
        ("svg2", "lloyd_step"),
        ("svg2", "block_sparse_attention"),
        ("-", "lloyd_step"),
        ("dense", "dense"),
    } <= checked
    walked = doc["schedules"]["float32"]["adaspa"]["walked"]
    assert list(walked) == ["dense-lse", "search", "reuse", "cached-search"]


def test_gpu_smoke_fails_on_a_wrong_kernel(script, tmp_path, monkeypatch):
    import functools

    import dit_sparse.methods.radial as radial

    kernel = radial.block_sparse_attention
    wrong = functools.wraps(kernel)(lambda *a, **k: kernel(*a, **k) * 1.01)
    monkeypatch.setattr(radial, "block_sparse_attention", wrong)
    out = tmp_path / "smoke.json"
    assert script("gpu_smoke").main(["--tiny", "--methods", "radial", "--out", str(out)]) == 1
    doc = json.loads(out.read_text())
    (failed,) = [c for c in doc["checks"] if not c["passed"]]
    assert failed["check"] == "block_sparse_attention" and failed["method"] == "radial"
    assert 9e-3 < failed["value"] < 1.1e-2  # the planted 1% error, against fp32 rounding


def test_gpu_smoke_needs_a_tree_on_the_gpu(script):
    with pytest.raises(SystemExit):
        script("gpu_smoke").main(["--methods", "radial"])


def test_compose_tiny(script, tmp_path, capsys):
    out = tmp_path / "result.json"
    argv = ["--tiny", "--models", "1.3b", "--methods", "radial", "--backend", "aot_eager"]
    assert (
        script("compose").main([*argv, "--warmup", "0", "--repeats", "1", "--out", str(out)]) == 0
    )
    doc = json.loads(out.read_text())
    _check_provenance(doc)
    assert doc["backend"] == "aot_eager" and doc["num_steps"] == 50
    (model,) = doc["models"]
    assert "error" not in model, model
    # TaylorSeer at interval 2 after 12 full steps predicts steps 12, 14, ..., 48, and
    # dit_sparse's step tracking saw exactly those forwards skip their attention layers.
    assert model["cache"]["skipped_steps"] == list(range(12, 50, 2))
    assert model["cache_rule_matches"] is True
    assert model["compiled"]["graph_breaks"] == 0 and model["compiled"]["graphs"] >= 1
    rows = {(r["method"], r["mode"], r["cache"]): r for r in model["compositions"]}
    assert set(rows) == {(m, mode, c) for m in ("dense", "radial")
                         for mode in ("eager", "compiled") for c in (False, True)}  # fmt: skip
    assert rows[("dense", "eager", False)]["speedup_vs_dense_eager"] == 1.0
    assert set(model["targets"]["sparse_over_dense"]) == {"radial"}
    assert "| radial | compiled |" in capsys.readouterr().out


def test_kernel_tiny_8bit_checks_and_sweep_columns(script, tmp_path):
    """`benchmarks/kernel.py --tiny --precision 8bit` on the CPU (torch references): the 8-bit
    checks are within issue 29's bounds, and every sweep row has its 8-bit columns."""
    out = tmp_path / "kernel.json"
    script("kernel").main(["--tiny", "--precision", "8bit", "--out", str(out)])
    doc = json.loads(out.read_text())
    assert doc["precision"] == "8bit" and "extras" not in doc
    checks = {name: c for name, c in doc["checks_8bit"].items() if isinstance(c, dict)}
    assert len(checks) == 9  # 3 inputs x 3 plans
    for name, check in checks.items():
        assert check["cosine"] >= 0.999 and check["rel_l2"] <= 4e-2, (name, check)
        assert check["bf16_kernel_rel_l2"] < 1e-5 and check["output_finite"]
    assert len(doc["sweep"]) == 5
    for row in doc["sweep"]:
        assert row["kernel_8bit_ms"] > 0 and row["bf16_over_8bit"] > 0
        assert row["quantize_ms"] is None  # no quantisation passes in the reference


def test_tune_heldout_tiny(script, tmp_path):
    module = script("tune_heldout")
    argv = ["--tiny", "--tune-prompts", "1", "--heldout", "1", "--out-dir", str(tmp_path)]
    assert module.main(argv) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert doc["gpu"] == "cpu" and doc["model"] == "tiny-wan" and doc["command"]
    assert len(doc["tune_prompts"]) == len(doc["heldout_prompts"]) == 1
    rows = {row["setting"]: row for row in doc["heldout"]}
    assert list(rows) == ["radial", "svg", "adaspa", f"tuned {profile['label']}"]
    assert all(row["prompts"] == 1 and row["predicted_speedup"] > 0 for row in rows.values())
    assert doc["tune"]["cost"] == profile["cost"]
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_precision_quality_tiny(script, tmp_path):
    argv = ["--tiny", "--methods", "radial", "--prompts", "1", "--out-dir", str(tmp_path)]
    assert script("precision_quality").main(argv) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["gpu"] == "cpu" and doc["model"] == "wan-shapes"
    assert doc["command"] == "python benchmarks/precision_quality.py " + " ".join(argv)
    rows = {(c["method"], c["variant"]): c for c in doc["comparisons"]}
    assert list(rows) == [
        ("dense", "8bit every step"),
        ("radial", "8bit sparse steps"),
        ("radial", "8bit every step"),
    ]
    dense = rows[("dense", "8bit every step")]
    assert dense["against"] == "dense" and dense["cases"] == 1
    # Against the model's own dense, the 8-bit kernel is close but not exact.
    assert 35.0 < dense["vs_bf16"]["psnr"] < float("inf")
    assert dense["vs_bf16"]["psnr"] == pytest.approx(dense["vs_dense"]["psnr"])
    radial = rows[("radial", "8bit every step")]
    assert radial["against"] == "radial" and 0.99 < radial["vs_bf16"]["ssim"] <= 1.0
    assert (tmp_path / "results.md").read_text().startswith("# 8-bit against bf16")
