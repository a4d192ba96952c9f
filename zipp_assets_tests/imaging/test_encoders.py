import json

import numpy as np
import pytest
from PIL import Image

from zipp_assets.imaging.encoders import OpenClipEncoder, PixelStatsEncoder
from zipp_assets.imaging.resources import ImageEncoderResource
from zipp_assets.simworld.render import Style, render_png


def _images(style: Style, n: int, seed: int) -> list[Image.Image]:
    import io

    rng = np.random.default_rng(seed)
    return [Image.open(io.BytesIO(render_png(style.jittered(rng), rng))) for _ in range(n)]


def test_pixel_stats_are_normalised_and_separate_styles():
    encoder = PixelStatsEncoder()
    a = encoder.encode(_images(Style(0.05, 0.8, 0.7, "stripes", 3.0), 12, 1))
    b = encoder.encode(_images(Style(0.6, 0.4, 0.4, "dots", 6.0), 12, 2))
    assert a.shape == (12, encoder.dim) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    within = (a @ a.T).mean() + (b @ b.T).mean()
    across = 2 * (a @ b.T).mean()
    assert within > across + 0.1
    assert encoder.encode([]).shape == (0, encoder.dim)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny, randomly initialised open_clip architecture, registered like a real config."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip_configs")
    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
              "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}  # CLIP's BPE
    (folder / "zipp-tiny-test.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    model, _, _ = open_clip.create_model_and_transforms("zipp-tiny-test", pretrained=None)
    checkpoint = folder / "tiny.safetensors"
    save_file(model.state_dict(), str(checkpoint))
    return checkpoint


def test_open_clip_encoder_loads_a_local_checkpoint(tiny_clip):
    images = [Image.new("RGB", (40, 30), (i * 40, 90, 200)) for i in range(5)]
    encoder = OpenClipEncoder("zipp-tiny-test", str(tiny_clip), batch_size=2)
    vectors = encoder.encode(images)
    assert vectors.shape == (5, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = OpenClipEncoder("zipp-tiny-test", str(tiny_clip)).encode(images)
    assert np.allclose(vectors, again, atol=1e-5)  # the same weights, not a fresh random init
    assert str(tiny_clip) in encoder.name


def test_encoder_resource_rejects_bad_settings(tiny_clip):
    with pytest.raises(ValueError, match="unknown image encoder backend"):
        ImageEncoderResource(backend="magic").build()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        OpenClipEncoder("zipp-tiny-test", str(tiny_clip), device="cuda")
    assert ImageEncoderResource.for_profile("production").backend == "open_clip"
    assert isinstance(ImageEncoderResource.for_profile("demo").build(), PixelStatsEncoder)


def test_encoder_name_is_known_without_loading_weights(tiny_clip):
    resource = ImageEncoderResource(backend="open_clip", model_name="zipp-tiny-test", pretrained=str(tiny_clip))
    assert resource.encoder_name == resource.build().name
    assert ImageEncoderResource().encoder_name == PixelStatsEncoder.name
    # A production name never needs the (absent) weights just to be named.
    assert ImageEncoderResource.for_profile("production").encoder_name == "open_clip:ViT-L-14-336:openai"


def test_open_clip_text_tower_gives_zero_shot_descriptors(tiny_clip):
    """The personas stage describes a visual profile by its nearest vocabulary phrases (CLIP zero-shot)."""
    from zipp_assets.personas.descriptors import AESTHETIC_VOCABULARY, clip_descriptors

    encoder = OpenClipEncoder("zipp-tiny-test", str(tiny_clip))
    texts = encoder.encode_text(["golden hour light", "neon colours", "golden hour light"])
    assert texts.shape == (3, 16) and np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert np.allclose(texts[0], texts[2]) and not np.allclose(texts[0], texts[1])
    target = encoder.encode_text(["a photo with moody low light"])[0]
    words = clip_descriptors(target, encoder.encode_text, per_category=1)
    assert "moody low light" in words and len(words) == len(AESTHETIC_VOCABULARY)
