from pathlib import Path

from zipp_assets.reddit.image_urls import extract_image_urls, image_cache_path, normalize_url, url_cache_key


def test_direct_image_by_extension_or_image_hint():
    assert extract_image_urls({"url": "https://i.redd.it/abc.jpg"}) == [("https://i.redd.it/abc.jpg", "direct")]
    hinted = {"url": "https://i.reddituploads.com/abc?fit=max&amp;h=1", "post_hint": "image"}
    assert extract_image_urls(hinted) == [("https://i.reddituploads.com/abc?fit=max&h=1", "direct")]


def test_gallery_follows_gallery_order_and_decodes_entities():
    post = {
        "url": "https://www.reddit.com/gallery/x1",
        "is_gallery": True,
        "media_metadata": {
            "a": {"status": "valid", "e": "Image", "m": "image/png", "s": {"u": "https://preview.redd.it/a.png?w=1&amp;s=2"}},
            "b": {"status": "valid", "e": "Image", "m": "image/jpg", "s": {}},
            "c": {"status": "valid", "e": "AnimatedImage", "m": "image/gif", "s": {"gif": "https://i.redd.it/c.gif"}},
            "d": {"status": "failed", "e": "Image", "m": "image/png"},
        },
        "gallery_data": {"items": [{"media_id": "b"}, {"media_id": "a"}, {"media_id": "c"}, {"media_id": "d"}]},
    }
    assert extract_image_urls(post) == [
        ("https://i.redd.it/b.jpg", "gallery"),
        ("https://preview.redd.it/a.png?w=1&s=2", "gallery"),
    ]


def test_preview_only_for_image_posts_whose_url_is_a_page():
    preview = {"images": [{"source": {"url": "https://preview.redd.it/p.png?auto=webp&amp;s=9"}}]}
    imgur_page = {"url": "https://imgur.com/gallery/Q", "post_hint": "image", "preview": preview}
    assert extract_image_urls(imgur_page) == [("https://preview.redd.it/p.png?auto=webp&s=9", "preview")]
    article = {"url": "https://news.example/story", "post_hint": "link", "preview": preview}
    assert extract_image_urls(article) == []


def test_crosspost_takes_the_parent_images_and_self_posts_have_none():
    parent = {"url": "https://i.redd.it/orig.png", "post_hint": "image"}
    crosspost = {"url": "/r/pics/comments/abc/", "crosspost_parent_list": [parent]}
    assert extract_image_urls(crosspost) == [("https://i.redd.it/orig.png", "crosspost")]
    assert extract_image_urls({"url": "https://www.reddit.com/r/x/comments/1/", "is_self": True}) == []


def test_videos_bad_schemes_and_junk_are_not_images():
    assert extract_image_urls({"url": "https://i.imgur.com/a.gifv", "post_hint": "image"}) == []
    assert extract_image_urls({"url": "javascript:alert(1).png"}) == []
    assert extract_image_urls({"url": "file:///etc/passwd.png"}) == []
    assert extract_image_urls({"url": 12345}) == []
    assert extract_image_urls({"media_metadata": "garbage", "url": None}) == []
    assert normalize_url("https://exa mple.com/a.png") is None


def test_cache_path_is_a_hash_never_the_url_text(tmp_path):
    url = "https://evil.example/../../../etc/passwd.png"
    path = image_cache_path(tmp_path, url)
    assert path.parent.parent == tmp_path
    assert path.name == url_cache_key(url) and len(path.name) == 64
    assert ".." not in path.relative_to(tmp_path).parts
    assert isinstance(path, Path)
