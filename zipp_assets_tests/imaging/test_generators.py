import colorsys
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zipp_assets.imaging.encoders import PixelStatsEncoder
from zipp_assets.imaging.generators import VOCABULARY_VERSION, DiffusersGenerator, OfflineRenderer
from zipp_assets.imaging.prompt_vocabulary import css_hsv, named_attributes
from zipp_assets.imaging.resources import ImageGeneratorResource

LONG_PROMPT = " ".join(f"word{i}" for i in range(200))


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def _mean_hue_degrees(image) -> float:
    """Circular mean of the hue, weighted by saturation (grey pixels carry no hue)."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float64) / 255.0
    angle, weight = hsv[..., 0] * 2 * np.pi, hsv[..., 1]
    return float(np.degrees(np.arctan2((weight * np.sin(angle)).sum(), (weight * np.cos(angle)).sum())) % 360)


def _hue_distance(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def _mean_brightness(image) -> float:
    return float(np.asarray(image.convert("HSV"), dtype=np.float64)[..., 2].mean() / 255.0)


# --- diffusers ------------------------------------------------------------------------------------


def _tiny(folder, **options) -> DiffusersGenerator:
    settings = dict(num_inference_steps=2, width=32, height=32, batch_size=2) | options
    return DiffusersGenerator(str(folder), **settings)


def test_diffusers_images_are_fixed_by_seed_not_by_batch(tiny_sd_dir):
    prompts, seeds = ["a teal cat", "a red dog", "a striped house"], [11, 12, 13]
    messages = []
    generator = _tiny(tiny_sd_dir, batch_size=2)
    batched = generator.generate(prompts, seeds, progress=messages.append)
    assert [image.size for image in batched] == [(32, 32)] * 3 and all(im.mode == "RGB" for im in batched)
    assert len(messages) == 2 and "batch 2/2" in messages[1]  # one pipeline call per batch
    one_at_a_time = _tiny(tiny_sd_dir, batch_size=1)
    single = one_at_a_time.generate(prompts, seeds)
    # Per-image generators draw the same starting noise in any batch; CPU kernels gave exact equality
    # here, one grey level is allowed for batch-size-dependent float summation order.
    assert all(np.abs(_pixels(a) - _pixels(b)).max() <= 1 for a, b in zip(batched, single, strict=True))
    again = generator.generate(prompts[:1], seeds[:1])[0]  # no random state carried between calls
    assert np.array_equal(_pixels(again), _pixels(batched[0]))
    other_seed = one_at_a_time.generate(prompts[:1], [99])[0]
    assert np.abs(_pixels(other_seed) - _pixels(batched[0])).max() > 10
    with_negative = _tiny(tiny_sd_dir, negative_prompt="blurry").generate(prompts[:1], seeds[:1])[0]
    assert not np.array_equal(_pixels(with_negative), _pixels(batched[0]))  # the negative prompt reaches the pipeline
    assert generator.generate([], []) == []


def test_diffusers_fit_prompt_cuts_by_the_real_tokenizer(tiny_sd_dir):
    from transformers import AutoTokenizer

    generator = _tiny(tiny_sd_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_sd_dir / "tokenizer", local_files_only=True)
    assert generator.token_limit == 77 and generator.limiting_tokenizer.startswith("tokenizer ")
    assert generator.count_tokens("a teal cat") == len(tokenizer("a teal cat")["input_ids"])
    fitted, truncated = generator.fit_prompt(LONG_PROMPT)
    assert truncated and LONG_PROMPT.startswith(fitted) and LONG_PROMPT[len(fitted)] == " "
    assert generator.count_tokens(fitted) <= 77
    next_word = LONG_PROMPT[: LONG_PROMPT.index(" ", len(fitted) + 1)]
    assert generator.count_tokens(next_word) > 77  # the longest prefix that fits, not just any
    assert generator.fit_prompt("a teal cat, film grain") == ("a teal cat, film grain", False)


def test_diffusers_limit_comes_from_the_shortest_tokenizer(tiny_sd_dir, tmp_path):
    """Like SD3 or Flux: a CLIP tokenizer (77) beside a T5-like one that reads longer prompts."""
    import json

    from transformers import AutoTokenizer

    folder = tmp_path / "two_tokenizers"
    shutil.copytree(tiny_sd_dir, folder)
    long_reader = AutoTokenizer.from_pretrained(tiny_sd_dir / "tokenizer", local_files_only=True)
    long_reader.model_max_length = 256
    long_reader.save_pretrained(folder / "tokenizer_2")
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer_2"] = ["transformers", "PreTrainedTokenizerFast"]
    (folder / "model_index.json").write_text(json.dumps(index))
    generator = _tiny(folder)
    assert generator.token_limit == 77 and generator.limiting_tokenizer.startswith("tokenizer ")
    shutil.rmtree(folder / "tokenizer")  # now only the long reader is left to count with
    index["tokenizer"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    generator = _tiny(folder)
    assert generator.token_limit == 256 and generator.limiting_tokenizer.startswith("tokenizer_2 ")
    assert not generator.fit_prompt(" ".join(["cat"] * 150))[1]


def test_diffusers_loads_weights_only_when_generating(tiny_sd_dir, tmp_path):
    without_unet = tmp_path / "pipeline"
    shutil.copytree(tiny_sd_dir, without_unet)
    shutil.rmtree(without_unet / "unet")
    generator = _tiny(without_unet)  # construction and token counting need no weights
    assert generator.fit_prompt(LONG_PROMPT)[1]
    with pytest.raises(FileNotFoundError, match="not available locally"):
        generator.generate(["a cat"], [1])


def test_diffusers_rejects_bad_settings_and_requests(tiny_sd_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown dtype"):
        _tiny(tiny_sd_dir, dtype="int8")
    with pytest.raises(ValueError, match="float16 needs a cuda device"):
        _tiny(tiny_sd_dir, dtype="float16")
    with pytest.raises(ValueError, match="cpu_offload"):
        _tiny(tiny_sd_dir, cpu_offload=True)
    with pytest.raises(ValueError, match="multiples of 8"):
        _tiny(tiny_sd_dir, width=30, height=32)
    with pytest.raises(ValueError, match="batch_size"):
        _tiny(tiny_sd_dir, batch_size=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _tiny(tmp_path / "missing")
    # A model id that is not in the local cache is never downloaded: a clear error instead.
    absent = DiffusersGenerator("zipp-tests/not-a-cached-model", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        absent.count_tokens("a cat")
    generator = _tiny(tiny_sd_dir)
    with pytest.raises(ValueError, match="one seed per prompt"):
        generator.generate(["a", "b"], [1])
    with pytest.raises(ValueError, match="outside"):
        generator.generate(["a"], [-1])


# --- offline renderer ------------------------------------------------------------------------------


def test_renderer_request_validation():
    renderer = OfflineRenderer()
    bad = [(["a", "b"], [1], "one seed per prompt"), ("a cat", [1, 2, 3, 4, 5], "not one string"),
           (["a"], [-3], "outside"), (["a"], [2**63], "outside"), (["a"], [1.5], "not an integer"),
           (["a"], [True], "not an integer"), ([None], [1], "not a string")]
    for prompts, seeds, message in bad:
        with pytest.raises(ValueError, match=message):
            renderer.generate(prompts, seeds)
    with pytest.raises(ValueError, match="at least 8x8"):
        OfflineRenderer(4, 64)
    assert renderer.generate([], []) == []
    assert renderer.generate(["x"], [np.int64(3)])[0].size == (64, 64)


def test_renderer_is_deterministic_per_prompt_and_seed():
    renderer = OfflineRenderer(48, 40)
    first = renderer.generate(["a portrait", "a portrait"], [5, 6])
    again = renderer.generate(["a portrait"], [5])[0]
    assert first[0].size == (48, 40)
    assert np.array_equal(_pixels(first[0]), _pixels(again))
    assert not np.array_equal(_pixels(first[0]), _pixels(first[1]))


def test_naming_teal_pins_the_hue_to_css_teal():
    assert css_hsv("teal")[0] * 360 == pytest.approx(180.0)
    renderer = OfflineRenderer()
    for prompt in ("a teal portrait", "Teal landscape with mountains, film grain", "a dark TEAL street"):
        hues = [_mean_hue_degrees(image) for image in renderer.generate([prompt] * 6, range(6))]
        assert max(_hue_distance(h, 180.0) for h in hues) < 8, (prompt, hues)


def test_dark_and_bright_order_mean_brightness():
    renderer = OfflineRenderer()
    seeds = range(8)
    dark = [_mean_brightness(im) for im in renderer.generate(["a dark portrait at night"] * 8, seeds)]
    bright = [_mean_brightness(im) for im in renderer.generate(["a bright airy portrait"] * 8, seeds)]
    generic = [_mean_brightness(im) for im in renderer.generate(["a portrait"] * 8, seeds)]
    assert all(d < g < b for d, g, b in zip(dark, generic, bright, strict=True)), (dark, generic, bright)


def test_stripes_and_polka_dots_differ_in_texture_features():
    """Stripes put the gradient energy in one orientation; dots spread it over all of them."""
    encoder = PixelStatsEncoder()
    renderer = OfflineRenderer()
    orientation = slice(encoder.hue_bins + encoder.sat_bins + encoder.val_bins,
                        encoder.hue_bins + encoder.sat_bins + encoder.val_bins + encoder.orientation_bins)

    def orientation_entropy(prompt):
        features = [encoder._features(im)[orientation] for im in renderer.generate([prompt] * 10, range(10))]
        return np.array([-(p / p.sum() * np.log(p / p.sum() + 1e-12)).sum() for p in features])

    striped, dotted = orientation_entropy("a striped shirt"), orientation_entropy("a shirt with polka dots")
    assert (striped < dotted - 0.3).all(), (striped, dotted)
    grain = [encoder._features(im)[-12:-6] for im in renderer.generate(["film grain"] * 5, range(5))]
    rings = [encoder._features(im)[-12:-6] for im in renderer.generate(["concentric rings"] * 5, range(5))]
    assert np.mean(grain, axis=0)[-2:].sum() > np.mean(rings, axis=0)[-2:].sum() + 0.2  # grain is high-frequency


def test_unnamed_attributes_come_from_the_seed():
    renderer = OfflineRenderer()
    hues = np.radians([_mean_hue_degrees(im) for im in renderer.generate(["a photo of something"] * 20, range(20))])
    sextants = {int(np.degrees(h) // 60) for h in hues}
    assert len(sextants) >= 4 and abs(np.mean(np.exp(1j * hues))) < 0.5, np.degrees(hues)
    # The same seed with a colour added changes the hue and nothing else.
    plain, teal = renderer.style_for("a portrait", 3), renderer.style_for("a teal portrait", 3)
    assert dataclasses.replace(plain, hue=teal.hue, named=teal.named) == teal
    assert renderer.style_for("qwxz zzyzx florp", 3).named == ()
    assert renderer.generate(["qwxz zzyzx florp"], [3])[0].size == (64, 64)
    assert renderer.generate([""], [0])[0].size == (64, 64)


def test_vocabulary_matching_rules():
    def named(prompt):
        return named_attributes(prompt).values

    assert named("a Red and blue flag")["hue"] == pytest.approx(0.0)  # first colour wins
    assert named("black and white street")["saturation"] == 0.0 and "colour" not in named("black and white")
    assert "colour" not in named("reddit bluetooth scattered")  # whole words only
    assert "pattern" not in named("no stripes, without dots")
    assert named("underexposed portrait")["brightness"] < 0.3 and named("low-key")["contrast"] > 0.8
    assert named("pastel")["saturation"] < 0.3 and named("pastel")["brightness"] > 0.8
    navy = OfflineRenderer().style_for("a navy coat", 0)
    assert navy.brightness == pytest.approx(128 / 255)  # navy is a dark blue by its CSS value
    assert OfflineRenderer().style_for("bright navy", 0).brightness == 0.9  # an explicit tone word beats it
    assert named("pink, navy")["colour_saturation"] == pytest.approx(css_hsv("pink")[1])  # tone travels with its hue
    assert named("red, navy").get("colour_brightness") is None
    assert named("cool teal")["hue"] == pytest.approx(0.5)  # a colour beats warm/cool
    for seed in range(10):
        warm = OfflineRenderer().style_for("a warm scene", seed).hue * 360
        assert warm >= 330 or warm <= 60
        assert 150 <= OfflineRenderer().style_for("cool tones", seed).hue * 360 <= 270
    assert OfflineRenderer().style_for("a cat and a castle", 1).subject == "animal"
    assert "CSS" in VOCABULARY_VERSION


def test_renderer_counts_and_fits_tokens_at_word_boundaries():
    renderer = OfflineRenderer()
    assert renderer.token_limit == 77 and renderer.count_tokens("a teal cat, film grain") == 8
    fitted, truncated = renderer.fit_prompt(LONG_PROMPT)
    assert truncated and fitted == " ".join(f"word{i}" for i in range(75))
    assert renderer.fit_prompt("a teal cat") == ("a teal cat", False)
    assert renderer.fit_prompt("") == ("", False)


def test_generators_import_nothing_from_the_synthetic_world():
    """The renderer's vocabulary is public; the world's hidden vocabulary must never reach it."""
    import zipp_assets.imaging as imaging

    folder = Path(imaging.__file__).parent
    for module in ("generators", "generation", "offline_renderer", "prompt_vocabulary", "resources"):
        assert "simworld" not in (folder / f"{module}.py").read_text(encoding="utf-8").replace(
            "`zipp_assets.simworld`", ""), module
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, zipp_assets.imaging.generators; "
                               "print(sorted(m for m in sys.modules if 'simworld' in m))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


# --- resource --------------------------------------------------------------------------------------


def test_generator_resource_profiles_and_backends(tiny_sd_dir):
    demo = ImageGeneratorResource.for_profile("demo")
    assert isinstance(demo.build(), OfflineRenderer) and "not a diffusion model" in demo.description
    assert not demo.uses_gpu
    assert ImageGeneratorResource(width=32, height=24).build().generate(["x"], [1])[0].size == (32, 24)
    production = ImageGeneratorResource.for_profile("production", environ={})
    assert (production.backend, production.model, production.dtype, production.device) == (
        "diffusers", "stabilityai/stable-diffusion-xl-base-1.0", "float16", "cuda")
    assert production.uses_gpu and production.description.startswith("diffusers:stabilityai/stable-diffusion-xl")
    chosen = ImageGeneratorResource.for_profile("production", environ={"ZIPP_DIFFUSION_MODEL": "/models/sd15"})
    assert chosen.model == "/models/sd15"
    local = ImageGeneratorResource(backend="diffusers", model=str(tiny_sd_dir), steps=2, width=32, height=32,
                                   dtype="bfloat16").build()
    assert isinstance(local, DiffusersGenerator) and "bfloat16" in local.name
    assert local.generate(["a cat"], [1])[0].size == (32, 32)
    with pytest.raises(ValueError, match="unknown image generator backend 'dall-e'"):
        ImageGeneratorResource(backend="dall-e").build()


def test_generator_resource_reaches_an_asset():
    import dagster as dg

    @dg.asset
    def rendered(image_generator: ImageGeneratorResource) -> dg.MaterializeResult:
        images = image_generator.build().generate(["a teal portrait", "a dark street"], [1, 2])
        return dg.MaterializeResult(metadata={"images": len(images), "generator": image_generator.description})

    result = dg.materialize([rendered], resources={"image_generator": ImageGeneratorResource(width=16, height=16)})
    metadata = result.asset_materializations_for_node("rendered")[0].metadata
    assert metadata["images"].value == 2 and "not a diffusion model" in metadata["generator"].value


def test_light_changes_a_pixels_brightness_never_its_colour():
    """The renderer's image model is paint times light: shading scales a pixel's channels alike, so its
    hue and saturation stay the paint's at every brightness (a tint/shade mix would pale the lit pixels)."""
    renderer = OfflineRenderer()
    for prompt in ("a vivid teal portrait with stripes, hard light", "a crimson landscape, concentric rings"):
        rgb = _pixels(renderer.generate([prompt], [2])[0]).reshape(-1, 3) / 255.0
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in rgb])
        lit = hsv[(hsv[:, 2] > 0.15) & (rgb.max(axis=1) < 0.99)]
        assert np.ptp(hsv[:, 2]) > 0.2, prompt  # the light does vary across the frame
        assert lit[:, 1].std() < 0.05, (prompt, lit[:, 1].std())
        assert abs(np.corrcoef(lit[:, 1], lit[:, 2])[0, 1]) < 0.5 or lit[:, 1].std() < 0.02

