"""The image loader against a local HTTP server on loopback and local files."""

import http.server
import io
import threading
import time

import pytest
from PIL import Image

from zipp_assets.graph.images import ImageLoader, ImageLoadError, LoaderConfig
from zipp_assets.reddit.image_urls import image_cache_path


def _png(color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802
        status, headers, body, delay = self.routes.get(self.path, (404, {}, b"", 0))
        time.sleep(delay)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    _Handler.routes = {
        "/ok.png": (200, {"Content-Type": "image/png"}, _png(), 0),
        "/page.html": (200, {"Content-Type": "text/html"}, b"<html>hi</html>", 0),
        "/fake.png": (200, {"Content-Type": "image/png"}, b"this is not a png", 0),
        "/huge.png": (200, {"Content-Type": "image/png", "Content-Length": str(10**9)}, b"", 0),
        "/long.png": (200, {"Content-Type": "image/png"}, b"\x89PNG" + b"0" * 5000, 0),
        "/slow.png": (200, {"Content-Type": "image/png"}, _png(), 2.0),
        "/redirect": (302, {"Location": "file:///etc/passwd"}, b"", 0),
    }
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def loader(tmp_path):
    (tmp_path / "allowed").mkdir()
    config = LoaderConfig(timeout_seconds=0.5, max_bytes=4096, allow_private_hosts=True)
    return ImageLoader(tmp_path / "cache", [tmp_path / "allowed"], config)


def test_http_image_is_fetched_cached_and_served_from_cache(loader, server, tmp_path):
    url = f"{server}/ok.png"
    image = loader.load(url)
    assert image.size == (16, 16) and image.mode == "RGB"
    assert image_cache_path(tmp_path / "cache", url).is_file()
    _Handler.routes.pop("/ok.png")  # the link dies later: the cache still serves it
    assert loader.load(url).getpixel((0, 0)) == (200, 30, 30)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/missing.png", "dead link: HTTP 404"),
        ("/page.html", "not an image: content type 'text/html'"),
        ("/fake.png", "not an image: UnidentifiedImageError"),
        ("/huge.png", "too large: 1000000000 bytes"),
        ("/long.png", "too large: more than 4096 bytes"),
        ("/slow.png", "dead link: timeout"),
        ("/redirect", "unsafe redirect"),
    ],
)
def test_http_failures_have_reasons(loader, server, path, reason):
    with pytest.raises(ImageLoadError) as info:
        loader.load(f"{server}{path}")
    assert str(info.value).startswith(reason)


def test_private_hosts_are_refused_by_default(tmp_path, server):
    loader = ImageLoader(tmp_path / "cache", [], LoaderConfig(timeout_seconds=0.5))
    with pytest.raises(ImageLoadError, match="unsafe host"):
        loader.load(f"{server}/ok.png")


def test_file_sources_stay_inside_the_allowed_roots(loader, tmp_path):
    good = tmp_path / "allowed" / "a.png"
    good.write_bytes(_png())
    assert loader.load(good.as_uri()).size == (16, 16)
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    for url in (secret.as_uri(), f"file://{tmp_path}/allowed/../secret.png", "file:relative/a.png"):
        with pytest.raises(ImageLoadError, match="unsafe path"):
            loader.load(url)
    (tmp_path / "allowed" / "link.png").symlink_to(secret)
    with pytest.raises(ImageLoadError, match="unsafe path"):
        loader.load((tmp_path / "allowed" / "link.png").as_uri())
    with pytest.raises(ImageLoadError, match="missing file"):
        loader.load((tmp_path / "allowed" / "nope.png").as_uri())
    with pytest.raises(ImageLoadError, match="unsupported scheme 'ftp'"):
        loader.load("ftp://example.com/a.png")
