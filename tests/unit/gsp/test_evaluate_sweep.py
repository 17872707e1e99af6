"""gsp evaluate --sweep: the perception-distortion sweep (enhancer temperature, noise and unsharp-mask controls),
its CSV, table and plot, resume, the control interpolated at equal PSNR cost, and the CLI's option errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from groundstation.errors import ConfigError
from groundstation.metrics.backends import cached_reference
from groundstation.registry import Registry
from gsp.evaluation import PER_IMAGE_CSV, ResolvedPoint, evaluate_folder, resolve_rate_points
from gsp.evaluation import (
    SWEEP_CSV,
    SweepSpec,
    Variant,
    add_gaussian_noise,
    ci95,
    controls_at_cost,
    interpolate_at,
    matched_strength,
    parse_values,
    rule_choice,
    sweep_folder,
    unsharp_mask,
)

from helpers import two_point_registry
from synth import smooth_image, write_pngs

SPEC = SweepSpec(temperatures=(0.0, 0.5), noise=(2.0, 6.0), unsharp=(100.0, 250.0), vgg="enhanced")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three small RGB images (sizes not multiples of 64: the codec pads), one in a sub-folder."""
    d = tmp_path_factory.mktemp("sweep-images")
    return write_pngs(d, (("a", (48, 64), 0), ("b", (40, 56), 1), ("sub/c", (64, 48), 2)))


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_codec, other_codec, enhancer_ckpts) -> Registry:
    """hi: the tiny codec with an identity enhancer at T=0; lo: another codec with a real (surrogate) enhancer at
    T=0.3, a temperature that is not in the sweep's list (the operating point must still be swept and marked)."""
    from enhancer.checkpoint import save_enhancer
    from enhancer.model import INNRSIC, EnhancerConfig

    identity = tmp_path_factory.mktemp("sweep-identity") / "identity.pt"
    save_enhancer(INNRSIC(EnhancerConfig(blocks=1, coupling_growth=4, cgm_growth=4)).init_identity(), identity)

    return two_point_registry(tiny_codec, other_codec, identity, enhancer_ckpts[0], temperature=0.3)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, images, registry):
    out = tmp_path_factory.mktemp("sweep")
    res = sweep_folder(images, out, resolve_rate_points(None, registry), SPEC)
    return res, out


def _expected(points) -> set[tuple[str, str, str]]:
    return {(p.name, img, v.label) for p in points for v in SPEC.variants(p.temperature)
            for img in ("a", "b", "sub__c")}


def test_csv_has_every_variant_for_every_image(swept, registry):
    res, out = swept
    points = resolve_rate_points(None, registry)
    rows = pd.read_csv(out / SWEEP_CSV)
    expected = _expected(points)
    # hi: decoded, T=0, T=0.5, 2 noise, 2 unsharp = 7; lo: the same plus its registry T=0.3 = 8
    assert len(expected) == 3 * (7 + 8)
    assert set(zip(rows.rate_point, rows.image, rows.variant)) == expected and len(rows) == len(expected)
    assert res.computed == len(expected) and res.skipped == 0 and res.images == 3
    assert {"enhanced:T=0.3", "noise:6", "unsharp:r1:250"} <= set(rows[rows.rate_point == "lo"].variant)
    # every row has PSNR and the perceptual distance; VGG only where asked (decoded and enhanced)
    assert rows.psnr_db.notna().all() and rows.perceptual.notna().all()
    assert (rows.perceptual_metric == "lpips_alex").all()
    vgg_rows = rows.family.isin(["decoded", "enhanced"])
    assert rows[vgg_rows].stlpips_vgg.notna().all() and rows[~vgg_rows].stlpips_vgg.isna().all()
    dec = rows[rows.variant == "decoded"]
    assert (dec.rms_change_dn == 0).all()
    # the controls change the decoded image, more with strength (the tiny untrained codecs decode at ~5 dB, so
    # PSNR itself says little here)
    rms = rows.pivot_table(index=["rate_point", "image"], columns="variant", values="rms_change_dn")
    assert (rms["noise:2"] > 1).all() and (rms["noise:6"] > rms["noise:2"]).all()
    assert (rms["unsharp:r1:100"] > 0).all() and (rms["unsharp:r1:250"] > rms["unsharp:r1:100"]).all()
    assert (rms["enhanced:T=0.5"] > 0).all()  # hi: the identity enhancer adds the latent field at T > 0


def test_sweep_reuses_the_evaluations_decode_and_enhancer(swept, images, registry, tmp_path):
    """The decoded row and the registry's enhanced row are the evaluation's numbers, image by image."""
    _, out = swept
    rows = pd.read_csv(out / SWEEP_CSV)
    evaluate_folder(images, tmp_path, resolve_rate_points(None, registry))
    per = pd.read_csv(tmp_path / PER_IMAGE_CSV)
    for point, label in (("hi", "enhanced:T=0"), ("lo", "enhanced:T=0.3")):
        for product, variant in (("decoded", "decoded"), ("enhanced", label)):
            a = per[(per.rate_point == point) & (per["product"] == product)].set_index("image").sort_index()
            b = rows[(rows.rate_point == point) & (rows.variant == variant)].set_index("image").sort_index()
            np.testing.assert_allclose(b.psnr_db, a.psnr_db, rtol=0, atol=1e-9)
            np.testing.assert_allclose(b.perceptual, a.perceptual, rtol=0, atol=1e-6)
    # the identity enhancer at T=0 returns the decoded image: same PSNR, no change
    hi = rows[rows.rate_point == "hi"].pivot_table(index="image", columns="variant", values="psnr_db")
    np.testing.assert_array_equal(hi["enhanced:T=0"], hi["decoded"])


def test_chosen_point_is_the_registrys(swept, registry):
    res, out = swept
    chosen = res.chosen.set_index("rate_point")
    assert chosen.loc["lo", "variant"] == "enhanced:T=0.3" and chosen.loc["lo", "temperature"] == 0.3
    assert chosen.loc["hi", "variant"] == "enhanced:T=0"
    summary = pd.read_csv(out / "perception_distortion_summary.csv")
    assert summary[summary.chosen].variant.tolist() == ["enhanced:T=0", "enhanced:T=0.3"]
    md = (out / "perception_distortion.md").read_text()
    assert "| lo | T=0.3 | 3 |" in md and "enhanced:T=0.3 (registry)" in md
    assert "## The controls at the enhancer's PSNR cost" in md and "Gaussian noise" in md


def test_the_rule_is_applied_and_compared_with_the_registry(swept):
    res, out = swept
    rule = res.rule.set_index("rate_point")
    assert set(rule.index) == {"lo", "hi"}
    for rp, r in rule.iterrows():  # the rule's own definition, checked on the summary it read
        enh = res.summary[(res.summary.rate_point == rp) & (res.summary.family == "enhanced")]
        ok = enh[-enh.d_psnr_db <= 0.6]
        want = ok.loc[ok.perceptual.idxmin()] if len(ok) else enh.loc[(-enh.d_psnr_db).idxmin()]
        assert r.temperature == want.strength and r.qualified == bool(len(ok))
        assert r.agrees == (r.temperature == r.registry_temperature)
    import json

    saved = json.loads((out / "operating_points.json").read_text())
    assert [p["rate_point"] for p in saved["rate_points"]] == list(res.rule.rate_point)
    assert "## The operating-point rule on these images" in (out / "perception_distortion.md").read_text()


def _summary(rows):
    return pd.DataFrame([{"rate_point": "p", "family": "enhanced", "images": 10, "strength": t, "d_psnr_db": d,
                          "perceptual": q, "d_perceptual_pct": -q, "enhancer_strength": a}
                         for t, d, q, *rest in rows for a in (rest[0] if rest else 1.0,)])


def _point(t, a=1.0):
    return ResolvedPoint("p", "c", "c.pt", None, "e", "e.pt", None, t, None, strength=a)


def test_rule_chooses_temperature_and_strength_together():
    """The cheapest temperature can still cost too much: a strength below 1 is then the rule's way down."""
    s = _summary([(0, -0.55, 0.30), (0, -0.45, 0.31, 0.8), (0.5, -0.48, 0.33, 0.6), (0.5, -0.9, 0.25)])
    r = rule_choice(s, [_point(0)], max_cost_db=0.5).iloc[0]
    assert (r.temperature, r.strength, r.qualified, r.agrees) == (0, 0.8, True, False)
    assert (r.registry_temperature, r.registry_strength) == (0, 1)
    r = rule_choice(s, [_point(0, 0.8)], max_cost_db=0.5).iloc[0]
    assert r.agrees  # the registry records (0, 0.8)


def test_strengths_are_swept_at_every_temperature_and_the_registrys_point_is_marked(images, registry, tmp_path):
    """--strengths: each temperature at each strength; a rate point whose registry strength is below 1 has that
    operating point swept and chosen; strength a keeps about a of the enhancer's change; an older sweep file
    (no enhancer_strength column) resumes as strength 1."""
    spec = SweepSpec(temperatures=(0.5,), strengths=(0.5, 1.0), noise=(), unsharp=(), vgg="none")
    lo = resolve_rate_points(["lo"], registry, strength=0.75)[0]
    assert lo.strength == 0.75 and lo.operating_label == "T=0.3:a=0.75"
    res = sweep_folder(images, tmp_path, [lo], spec)
    labels = [v.label for v in spec.variants(lo.temperature, lo.strength)]
    assert labels == ["decoded", "enhanced:T=0.5", "enhanced:T=0.3:a=0.75", "enhanced:T=0.5:a=0.5"]
    rows = pd.read_csv(tmp_path / SWEEP_CSV)
    assert res.computed == 3 * 4 and set(rows.variant) == set(labels)
    enh = rows[rows.family == "enhanced"].set_index(["image", "variant"])
    assert set(enh.enhancer_strength) == {0.5, 0.75, 1.0} and rows[rows.family == "decoded"].enhancer_strength.isna().all()
    change = enh.rms_change_dn.unstack()
    ratio = (change["enhanced:T=0.5:a=0.5"] / change["enhanced:T=0.5"]).to_numpy()
    np.testing.assert_allclose(ratio, 0.5, atol=0.05)
    assert res.chosen.iloc[0].variant == "enhanced:T=0.3:a=0.75"
    text = (tmp_path / "perception_distortion.md").read_text()
    assert "| lo | T=0.3:a=0.75 |" in text and "rule's a" in text
    # a file written before the knob: no enhancer_strength column; its enhancer rows are strength 1, kept
    old = rows.drop(columns="enhancer_strength")
    old = old[~old.variant.str.contains(":a=")]
    old.to_csv(tmp_path / SWEEP_CSV, index=False)
    again = sweep_folder(images, tmp_path, [lo], spec)
    assert again.computed == 3 * 2 and again.skipped == 3 * 2
    with pytest.raises(ConfigError, match="--strengths"):
        SweepSpec(strengths=(0.0,))
    with pytest.raises(ConfigError, match="with --temperatures none"):  # strengths need temperatures to sweep at
        SweepSpec(temperatures=(), strengths=(0.8,))
    with pytest.raises(ConfigError, match="--strength 1.5"):
        resolve_rate_points(["lo"], registry, strength=1.5)


def test_rule_picks_the_lowest_distance_within_the_cost_else_the_cheapest():
    s = _summary([(0, -0.1, 0.30), (0.5, -0.55, 0.20), (1.0, -0.9, 0.10)])
    r = rule_choice(s, [_point(0.5)]).iloc[0]
    assert (r.temperature, r.qualified, r.agrees) == (0.5, True, True)  # T=1 is better but costs 0.9 dB
    r = rule_choice(s, [_point(1.0)], max_cost_db=1.0).iloc[0]
    assert (r.temperature, r.agrees) == (1.0, True)
    r = rule_choice(_summary([(0.5, -0.7, 0.2), (1.0, -0.9, 0.1)]), [_point(1.0)]).iloc[0]
    assert (r.temperature, r.qualified, r.agrees) == (0.5, False, False)  # none within 0.6 dB: the cheapest


def test_plot_is_a_valid_image(swept):
    _, out = swept
    with Image.open(out / "perception_distortion.png") as im:
        im.verify()
    with Image.open(out / "perception_distortion.png") as im:
        assert im.format == "PNG" and im.size[0] >= 600 and im.size[1] >= 300


def test_rerun_computes_only_missing_rows(swept, images, registry, tmp_path):
    _, out = swept
    shutil.copy(out / SWEEP_CSV, tmp_path / SWEEP_CSV)
    points = resolve_rate_points(None, registry)
    again = sweep_folder(images, tmp_path, points, SPEC)
    assert again.computed == 0 and again.skipped == 45
    # an interrupted write: the last row lost
    lines = (tmp_path / SWEEP_CSV).read_text().splitlines(True)
    (tmp_path / SWEEP_CSV).write_text("".join(lines[:-1]))
    again = sweep_folder(images, tmp_path, points, SPEC)
    assert again.computed == 1
    # one more temperature: only its rows
    more = SweepSpec(temperatures=(0.0, 0.5, 1.0), noise=SPEC.noise, unsharp=SPEC.unsharp, vgg="enhanced")
    again = sweep_folder(images, tmp_path, points, more)
    assert again.computed == 2 * 3
    # VGG now asked for the controls too: their rows are recomputed, nothing else
    allvgg = SweepSpec(temperatures=more.temperatures, noise=SPEC.noise, unsharp=SPEC.unsharp, vgg="all")
    again = sweep_folder(images, tmp_path, points, allvgg)
    assert again.computed == 2 * 3 * 4
    rows = pd.read_csv(tmp_path / SWEEP_CSV)
    assert rows.stlpips_vgg.notna().all() and not rows.duplicated(["rate_point", "image", "variant"]).any()
    # the same numbers as the first run for the rows both have
    first = pd.read_csv(out / SWEEP_CSV).set_index(["rate_point", "image", "variant"]).sort_index()
    now = rows.set_index(["rate_point", "image", "variant"]).loc[first.index]
    np.testing.assert_allclose(now.psnr_db, first.psnr_db, rtol=0, atol=1e-12)
    np.testing.assert_allclose(now.perceptual, first.perceptual, rtol=0, atol=1e-9)


def test_worker_processes_give_the_same_rows(swept, images, registry, tmp_path):
    _, out = swept
    res = sweep_folder(images, tmp_path, resolve_rate_points(["lo"], registry), SPEC, workers=2, limit=2)
    assert res.images == 2 and res.computed == 2 * 8
    cols = ["psnr_db", "perceptual", "stlpips_vgg", "rms_change_dn"]
    mine = pd.read_csv(tmp_path / SWEEP_CSV).set_index(["image", "variant"]).sort_index()
    ref = pd.read_csv(out / SWEEP_CSV)
    ref = ref[(ref.rate_point == "lo") & ref.image.isin(["a", "sub__c"])].set_index(["image", "variant"]).sort_index()
    pd.testing.assert_frame_equal(mine[cols], ref[cols], rtol=0, atol=1e-9)


# ------------------------------------------------------------------------ control at equal PSNR cost

def test_matched_strength_interpolates_the_first_crossing():
    # strength 0 = decoded, cost 0; costs 0.2 / 0.6 / 1.4 dB at 2 / 4 / 6
    assert matched_strength([2, 4, 6], [0.2, 0.6, 1.4], 1.0) == pytest.approx(5.0)
    assert matched_strength([6, 2, 4], [1.4, 0.2, 0.6], 1.0) == pytest.approx(5.0)  # any order
    assert matched_strength([2, 4, 6], [0.2, 0.6, 1.4], 0.1) == pytest.approx(1.0)  # between decoded and 2
    assert matched_strength([2, 4, 6], [0.2, 0.6, 1.4], 0.6) == pytest.approx(4.0)
    assert matched_strength([2, 4, 6], [0.2, 0.6, 1.4], 0.0) == 0.0
    assert matched_strength([2, 4, 6], [0.2, 0.6, 1.4], 1.5) is None  # beyond the sweep: not extrapolated
    assert matched_strength([2, 4, 6], [0.2, 0.6, 1.4], -0.1) is None  # a PSNR gain: no control reaches it
    assert matched_strength([1, 2, 3], [0.5, 0.3, 0.9], 0.4) == pytest.approx(0.8)  # not monotone: first crossing
    with pytest.raises(ValueError):
        matched_strength([1, 2], [0.5], 0.4)


def test_interpolate_at_is_per_image_and_linear_in_strength():
    decoded = np.array([1.0, 10.0])
    values = np.array([[3.0, 5.0], [20.0, 40.0]])  # strengths 2 and 4
    np.testing.assert_allclose(interpolate_at(3.0, [2, 4], decoded, values), [4.0, 30.0])
    np.testing.assert_allclose(interpolate_at(1.0, [2, 4], decoded, values), [2.0, 15.0])
    np.testing.assert_allclose(interpolate_at(3.0, [4, 2], decoded, values[:, ::-1]), [4.0, 30.0])


def _frame(table: dict[str, tuple[list[float], list[float]]]) -> pd.DataFrame:
    rows = []
    for variant, (psnr, perc) in table.items():
        family = variant.split(":")[0]
        strength = float(variant.rsplit(":", 1)[1].removeprefix("T=")) if ":" in variant else 0.0
        for img, (p, q) in enumerate(zip(psnr, perc)):
            rows.append({"rate_point": "x", "image": f"i{img}", "variant": variant, "family": family,
                         "strength": strength, "psnr_db": p, "perceptual": q, "stlpips_vgg": math.nan})
    return pd.DataFrame(rows)


def test_control_at_the_enhancers_psnr_cost_on_a_constructed_example():
    point = ResolvedPoint(
        name="x", codec="c", codec_path="", codec_sha256=None, enhancer="e", enhancer_path="",
        enhancer_sha256=None, temperature=0.5, lmbda=None)
    df = _frame({"decoded": ([30, 32], [0.40, 0.50]),
                 "enhanced:T=0.5": ([29, 31], [0.30, 0.35]),  # costs 1.0 dB
                 "noise:2": ([29.5, 31.5], [0.38, 0.46]),     # 0.5 dB
                 "noise:4": ([28.5, 30.5], [0.34, 0.42])})    # 1.5 dB -> strength 3 at 1.0 dB
    (c,) = controls_at_cost(df, point)
    assert c["control"] == "noise" and not c["beyond_sweep"]
    assert c["strength"] == pytest.approx(3.0)
    assert c["d_psnr_db"] == pytest.approx(-1.0) and c["enhancer_d_psnr_db"] == pytest.approx(-1.0)
    # the control at strength 3: perceptual 0.36, 0.44 -> -0.05 on a decoded mean of 0.45
    assert c["control_perceptual"] == pytest.approx(0.40)
    assert c["control_d_perceptual_pct"] == pytest.approx(-100 * 0.05 / 0.45)
    assert c["enhancer_d_perceptual_pct"] == pytest.approx(-100 * 0.125 / 0.45)
    # enhancer minus control, paired: -0.06, -0.09; Student t with 1 degree of freedom
    assert c["enh_minus_control_perceptual"] == pytest.approx(-0.075)
    assert c["enh_minus_control_perceptual_ci95"] == pytest.approx(12.7062 * np.std([-0.06, -0.09], ddof=1)
                                                                  / math.sqrt(2), rel=1e-4)
    assert c["enhancer_better_perceptual"] == 2
    # a sweep too weak to reach the enhancer's cost is reported, not extrapolated
    (weak,) = controls_at_cost(df[df.variant != "noise:4"], point)
    assert weak["beyond_sweep"] and weak["max_cost_db"] == pytest.approx(0.5)


def test_ci95_is_the_student_t_interval():
    m, h = ci95([1.0, 2.0, 3.0, math.nan])
    assert m == 2.0 and h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(ci95([1.0])[1])


# ------------------------------------------------------------------------------------- pieces

def test_controls_are_deterministic_and_change_the_image():
    img = (smooth_image(40, 40, seed=3).transpose(1, 2, 0) * 255).round().astype(np.uint8)
    a, b = add_gaussian_noise(img, 3.0, seed=7), add_gaussian_noise(img, 3.0, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and 2.0 < np.std(a.astype(float) - img) < 4.0
    u = unsharp_mask(img, 1.0, 150)
    assert u.shape == img.shape and u.dtype == np.uint8 and (u != img).any()


def test_cached_reference_gives_the_same_distances():
    from groundstation.metrics import PerceptualMetric

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)  # 2x2 tiles
    plain, cached = PerceptualMetric.stlpips_alex(), cached_reference(PerceptualMetric.stlpips_alex())
    assert type(cached.model).__name__ == "_CachedReference"
    for _ in range(3):
        other = np.clip(ref + rng.normal(0, 20, ref.shape), 0, 255).astype(np.uint8)
        assert cached.distance(ref, other) == pytest.approx(plain.distance(ref, other), rel=1e-6)


def test_parse_values_and_spec_errors():
    assert parse_values("0.5, 0,0.5", "--temperatures") == (0.0, 0.5)
    assert parse_values("none", "--noise", positive=True, allow_none=True) == ()
    for text, kw, match in (("0,x", {}, "'x' is not a number"), ("0,-1", {}, "out of range"),
                            ("nan", {}, "out of range"), ("0", {"positive": True}, "out of range"),
                            ("12.5", {"integer": True, "positive": True}, "not a whole number"),
                            ("", {}, "is not a number")):
        with pytest.raises(ConfigError, match=match):
            parse_values(text, "--opt", **kw)
    with pytest.raises(ConfigError, match="--sweep-vgg"):
        SweepSpec(vgg="some")
    with pytest.raises(ConfigError, match="--temperatures"):
        SweepSpec(temperatures=(-1.0,))
    assert parse_values("none", "--temperatures", allow_none=True) == ()  # --temperatures none
    only = [v.label for v in SweepSpec(temperatures=(), noise=(), unsharp=(100.0,)).variants(0.375)]
    assert only == ["decoded", "enhanced:T=0.375", "unsharp:r1:100"]  # the operating point alone
    labels = [v.label for v in SweepSpec(temperatures=(0.0,), noise=(3.0,), unsharp=(100.0,)).variants(0.25)]
    assert labels == ["decoded", "enhanced:T=0", "enhanced:T=0.25", "noise:3", "unsharp:r1:100"]
    assert Variant("unsharp", 150.0, 2.0).label == "unsharp:r2:150"


# ------------------------------------------------------------------------------------------ the CLI

@pytest.mark.parametrize("argv, message", [
    (["--temperatures", "0,0.5"], "--temperatures only apply to the perception-distortion sweep: add --sweep"),
    (["--sweep", "--temperatures", "0,-1"], "--temperatures 0,-1: -1 is out of range"),
    (["--sweep", "--temperatures", "0,hot"], "'hot' is not a number"),
    (["--sweep", "--noise", "0"], "--noise 0: 0 is out of range"),
    (["--sweep", "--unsharp", "12.5"], "not a whole number"),
    (["--sweep", "--unsharp-radius", "0"], "--unsharp-radius 0.0: give a radius > 0"),
    (["--rule-max-cost", "0.5"], "--rule-max-cost only apply to the perception-distortion sweep: add --sweep"),
    (["--sweep", "--rule-max-cost", "-1"], "--rule-max-cost -1.0: give a PSNR cost > 0"),
])
def test_cli_rejects_bad_sweep_options_without_a_traceback(tmp_path, capsys, argv, message):
    from gsp.cli import main

    code = main(["evaluate", str(tmp_path), "-o", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing was computed


def test_cli_sweep_only_skips_the_evaluation_table(images, tmp_path, capsys):
    """--sweep-only (implies --sweep): the operating point's effects and the controls, no per-image evaluation
    (its bpp, MS-SSIM and secondary columns are the costly part); --temperatures none: the operating point alone."""
    from groundstation.registry import load_registry
    from gsp.cli import main

    t = load_registry().rate_points["l0032"].temperature
    out = tmp_path / "o"
    code = main(["evaluate", str(images), "-o", str(out), "--rate-points", "l0032", "--limit", "2", "--sweep-only",
                 "--temperatures", "none", "--noise", "3", "--unsharp", "none", "--sweep-vgg", "none"])
    text = capsys.readouterr().out
    assert code == 0 and f"l0032 at the registry's T={t:g}" in text and "evaluated" not in text
    assert not (out / "per_image.csv").exists() and not (out / "evaluation.md").exists()
    rows = pd.read_csv(out / SWEEP_CSV)
    assert set(rows.variant) == {"decoded", f"enhanced:T={t:g}", "noise:3"} and len(rows) == 2 * 3
    assert main(["evaluate", str(images), "-o", str(out), "--sweep-only", "--tile-size", "256"]) == 2
    assert "--sweep-only: the sweep codes whole images" in capsys.readouterr().err
    assert main(["evaluate", str(images), "-o", str(out), "--sweep-only", "--strength", "0.8"]) == 2
    assert "which --sweep-only leaves out" in capsys.readouterr().err  # it would be ignored, not used


def test_cli_sweep_with_the_registrys_demo_models(images, tmp_path, capsys):
    """The real registry: the sweep's marked point is the registry's temperature for the rate point."""
    from groundstation.registry import load_registry
    from gsp.cli import main

    t = load_registry().rate_points["l0032"].temperature
    out = tmp_path / "o"
    code = main(["evaluate", str(images), "-o", str(out), "--rate-points", "l0032", "--limit", "2", "--sweep",
                 "--temperatures", "0", "--noise", "3", "--unsharp", "100", "--sweep-vgg", "none"])
    text = capsys.readouterr().out
    assert code == 0 and f"l0032 at the registry's T={t:g}" in text and "perception_distortion.png" in text
    rows = pd.read_csv(out / SWEEP_CSV)
    assert set(rows.variant) == {"decoded", "enhanced:T=0", f"enhanced:T={t:g}", "noise:3", "unsharp:r1:100"}
    assert len(rows) == 2 * len(set(rows.variant)) and rows.stlpips_vgg.isna().all()
    summary = pd.read_csv(out / "perception_distortion_summary.csv")
    assert summary[summary.chosen].variant.tolist() == [f"enhanced:T={t:g}"]
    assert (out / "evaluation.md").is_file() and (out / "perception_distortion.png").is_file()
