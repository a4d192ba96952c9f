"""The image loader against a local HTTP server on loopback and local files."""

import http.server
import io
import ipaddress
import threading
import time

import pytest
from PIL import Image, ImageFile

from zipp_assets.graph.images import MAX_SIDE, ImageLoader, ImageLoadError, LoaderConfig
from zipp_assets.graph.safe_fetch import AddressPolicy, is_public_address
from zipp_assets.reddit.image_urls import image_cache_path


class PolicyForTests(AddressPolicy):
    """Test-only address policy: answers made-up host names from `names` (a list of addresses, or a
    function returning one, per lookup), records every lookup, and with `allow_loopback` permits
    loopback, where these tests' servers live. Production code has no way to get loopback allowed."""

    def __init__(self, names=None, allow_loopback=True):
        self.names = names or {}
        self.allow_loopback = allow_loopback
        self.lookups = []

    def resolve(self, host, port):
        self.lookups.append(host)
        answer = self.names.get(host)
        if answer is None:
            return super().resolve(host, port)
        return [ipaddress.ip_address(a) for a in (answer() if callable(answer) else answer)]

    def permits(self, address):
        return (self.allow_loopback and address.is_loopback) or super().permits(address)


def _png(color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _drip(handler, data: bytes, every: float = 0.1):
    """Send `data` one byte at a time: each read is quick, the whole takes len(data) * every seconds."""
    try:
        for byte in data:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)
    except (BrokenPipeError, ConnectionResetError):
        pass


def _drip_body(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.end_headers()
    _drip(handler, _png() * 10)


def _drip_headers(handler):
    _drip(handler, b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"x" * 200 + b"\r\n\r\n")


def _drip_header_block(handler):
    """The status line at once, then the headers byte by byte: the watchdog cuts the header block."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    handler.wfile.flush()
    _drip(handler, b"X-Padding: " + b"x" * 200 + b"\r\nContent-Type: image/png\r\n\r\n" + _png())


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    seen: list = []  # (path, Host header) of every request

    def do_GET(self):  # noqa: N802
        self.seen.append((self.path, self.headers.get("Host")))
        route = self.routes.get(self.path, (404, {}, b"", 0))
        if callable(route):
            return route(self)
        status, headers, body, delay = route
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
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = httpd.server_address[1]
    _Handler.routes = {
        "/ok.png": (200, {"Content-Type": "image/png"}, _png(), 0),
        "/img.png": (200, {"Content-Type": "image/png"}, _png(), 0),
        "/page.html": (200, {"Content-Type": "text/html"}, b"<html>hi</html>", 0),
        "/fake.png": (200, {"Content-Type": "image/png"}, b"this is not a png", 0),
        "/huge.png": (200, {"Content-Type": "image/png", "Content-Length": str(10**9)}, b"", 0),
        "/long.png": (200, {"Content-Type": "image/png"}, b"\x89PNG" + b"0" * 5000, 0),
        "/slow.png": (200, {"Content-Type": "image/png"}, _png(), 2.0),
        "/redirect": (302, {"Location": "file:///etc/passwd"}, b"", 0),
        "/loop": (302, {"Location": "/loop"}, b"", 0),
        "/to-ok": (302, {"Location": f"http://good.test:{port}/img.png"}, b"", 0),
        "/to-metadata": (302, {"Location": "http://metadata.test/latest/meta-data/"}, b"", 0),
        "/to-private": (307, {"Location": f"http://10.0.0.7:{port}/img.png"}, b"", 0),
        "/drip-body": _drip_body,
        "/drip-headers": _drip_headers,
        "/drip-header-block": _drip_header_block,
    }
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


@pytest.fixture
def loader(tmp_path):
    (tmp_path / "allowed").mkdir()
    config = LoaderConfig(timeout_seconds=0.5, max_bytes=4096)
    names = {"good.test": ["127.0.0.1"], "metadata.test": ["100.100.100.200"]}
    return ImageLoader(tmp_path / "cache", [tmp_path / "allowed"], config, PolicyForTests(names))


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
        ("/fake.png", "not an image: not JPEG, PNG, GIF or WebP"),
        ("/huge.png", "too large: 1000000000 bytes"),
        ("/long.png", "too large: more than 4096 bytes"),
        ("/slow.png", "dead link: timeout"),
        ("/redirect", "unsafe redirect"),
        ("/loop", "dead link: more than 5 redirects"),
        ("/to-metadata", "unsafe redirect: unsafe host"),
        ("/to-private", "unsafe redirect: unsafe host"),
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


def test_the_address_checked_is_the_address_connected_to(tmp_path, server):
    """DNS rebinding: a name that resolves to an allowed address for the check and to an internal
    one a moment later. The loader resolves once and connects to the checked address, sending the
    name as the Host header."""
    port = server.rsplit(":", 1)[1]
    answers = iter([["127.0.0.1"], ["10.0.0.7"], ["10.0.0.7"]])
    policy = PolicyForTests({"rebind.test": lambda: next(answers)})
    loader = ImageLoader(tmp_path / "cache", [], LoaderConfig(timeout_seconds=0.5), policy)
    _Handler.seen.clear()
    assert loader.load(f"http://rebind.test:{port}/img.png").size == (16, 16)
    assert policy.lookups == ["rebind.test"]  # no second lookup
    assert _Handler.seen == [("/img.png", f"rebind.test:{port}")]


def test_every_redirect_is_resolved_and_checked_like_the_first_request(tmp_path, server):
    policy = PolicyForTests({"good.test": ["127.0.0.1"], "metadata.test": ["100.100.100.200"]})
    loader = ImageLoader(tmp_path / "cache", [], LoaderConfig(timeout_seconds=0.5), policy)
    assert loader.load(f"{server}/to-ok").size == (16, 16)
    assert policy.lookups == ["127.0.0.1", "good.test"]
    with pytest.raises(ImageLoadError, match=r"unsafe redirect: unsafe host: .*\(100.100.100.200\)"):
        loader.load(f"{server}/to-metadata")


@pytest.mark.parametrize("addresses", [
    ["100.100.100.200"],  # a cloud metadata service, in the shared address space 100.64.0.0/10
    ["100.64.0.1"], ["10.1.2.3"], ["172.16.0.1"], ["192.168.1.1"], ["127.0.0.1"], ["169.254.169.254"],
    ["::1"], ["fe80::1"], ["fd00::1"], ["::ffff:127.0.0.1"], ["::ffff:100.100.100.200"], ["224.0.0.1"],
    ["8.8.8.8", "127.0.0.1"],  # one internal answer among public ones taints the name
])
def test_names_that_resolve_to_non_public_addresses_are_never_connected_to(tmp_path, server, addresses):
    port = server.rsplit(":", 1)[1]
    policy = PolicyForTests({"inside.test": addresses}, allow_loopback=False)  # the production rule
    loader = ImageLoader(tmp_path / "cache", [], LoaderConfig(timeout_seconds=0.5), policy)
    _Handler.seen.clear()
    with pytest.raises(ImageLoadError, match="unsafe host: resolves to a non-public address"):
        loader.load(f"http://inside.test:{port}/img.png")
    assert _Handler.seen == []


def test_only_globally_routable_unicast_addresses_are_public():
    public = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
    internal = ["100.64.0.0", "100.100.100.200", "100.127.255.255", "10.0.0.1", "172.31.255.255", "192.168.0.1",
                "127.0.0.1", "0.0.0.0", "169.254.169.254", "224.0.0.1", "239.255.255.250", "240.0.0.1",
                "255.255.255.255", "192.0.0.1", "198.18.0.1", "::", "::1", "fe80::1", "fec0::1", "fd12::1",
                "ff02::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::1", "64:ff9b::a9fe:a9fe"]
    assert all(is_public_address(ipaddress.ip_address(a)) for a in public)
    assert not [a for a in internal if is_public_address(ipaddress.ip_address(a))]


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers", "/drip-header-block"])
def test_a_slow_drip_server_cannot_hold_a_worker_past_the_deadline(tmp_path, server, path):
    """Each byte arrives well within the read timeout; only the overall deadline stops the download."""
    config = LoaderConfig(timeout_seconds=0.5, deadline_seconds=1.0, max_bytes=10**6)
    loader = ImageLoader(tmp_path / "cache", [], config, PolicyForTests())
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"dead link: deadline of 1.0s passed"):
        loader.load(f"{server}{path}")
    assert time.monotonic() - started < 1.6


def _photo(size, format) -> bytes:
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_large_photos_are_thumbnailed_at_load(loader, tmp_path, monkeypatch, format):
    """A 6000x4000 photo (72 MB as RGB) loads as a thumbnail within MAX_SIDE; a JPEG is never even
    decoded at full size (draft mode decodes it at 1/8 scale)."""
    path = tmp_path / "allowed" / f"big.{format.lower()}"
    path.write_bytes(_photo((6000, 4000), format))
    decoded_sizes = []
    real_load = ImageFile.ImageFile.load

    def spying_load(self):
        decoded_sizes.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spying_load)
    loader.config = LoaderConfig(max_bytes=50 * 2**20)
    image = loader.load(path.as_uri())
    assert image.size[0] == MAX_SIDE and abs(image.size[1] - MAX_SIDE * 2 / 3) <= 1 and image.mode == "RGB"
    if format == "JPEG":
        assert max(w * h for w, h in decoded_sizes) <= 4 * MAX_SIDE**2  # 750x500 here, not 6000x4000


def test_decompression_bombs_and_broken_images_are_reasons(loader, tmp_path, monkeypatch):
    loader.config = LoaderConfig(max_bytes=2**20)
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")  # 64M pixels in about 8 KB
    truncated = _photo((400, 300), "JPEG")[:3000]
    cases = {"bomb.png": (bomb.getvalue(), "too large: 8000x8000 pixels"), "cut.jpg": (truncated, "not an image: OSError"),
             "empty.png": (b"", "not an image: not JPEG, PNG, GIF or WebP")}
    for name, (data, reason) in cases.items():
        (tmp_path / "allowed" / name).write_bytes(data)
        with pytest.raises(ImageLoadError) as info:
            loader.load((tmp_path / "allowed" / name).as_uri())
        assert str(info.value) == reason, name
    # A decoder that fails in a way nobody listed is still a reason, not a crash.
    (tmp_path / "allowed" / "odd.png").write_bytes(_png())
    monkeypatch.setattr(Image.Image, "thumbnail", lambda *a, **k: [][1])
    with pytest.raises(ImageLoadError, match="not an image: IndexError"):
        loader.load((tmp_path / "allowed" / "odd.png").as_uri())


def test_a_slow_dns_lookup_is_held_to_the_deadline(tmp_path, server):
    port = server.rsplit(":", 1)[1]

    def slow_answer():
        time.sleep(3)
        return ["127.0.0.1"]

    config = LoaderConfig(timeout_seconds=0.5, deadline_seconds=0.5, max_bytes=10**6)
    loader = ImageLoader(tmp_path / "cache", [], config, PolicyForTests({"slow-dns.test": slow_answer}))
    started = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"dead link: deadline of 0.5s passed"):
        loader.load(f"http://slow-dns.test:{port}/ok.png")
    assert time.monotonic() - started < 1.2
    # A lookup that fails in time is still "unreachable", on the caller's thread.
    failing = ImageLoader(tmp_path / "cache", [], config, PolicyForTests({"none.test": lambda: (_ for _ in ()).throw(OSError("no such name"))}))
    with pytest.raises(ImageLoadError, match="unreachable: cannot resolve host"):
        failing.load(f"http://none.test:{port}/ok.png")


def _image_bytes(format: str) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((64, 48)).convert("RGB").save(buffer, format=format)
    return buffer.getvalue()


@pytest.mark.parametrize("format", ["JPEG", "PNG", "GIF", "WEBP"])
def test_the_formats_reddit_serves_are_decoded(loader, tmp_path, format):
    path = tmp_path / "allowed" / f"photo.{format.lower()}"
    path.write_bytes(_image_bytes(format))
    loader.config = LoaderConfig(max_bytes=2**20)
    image = loader.load(path.as_uri())
    assert image.size == (64, 48) and image.mode == "RGB"


@pytest.mark.parametrize("format", ["EPS", "BMP", "TIFF", "ICO", "PPM", "TGA", "PCX", "SGI", "DDS", "IM"])
def test_formats_reddit_does_not_serve_are_never_decoded(loader, tmp_path, monkeypatch, format):
    from PIL import EpsImagePlugin

    ghostscript_runs = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ghostscript_runs.append(a) or Image.new("RGB", (1, 1)))
    path = tmp_path / "allowed" / f"image.{format.lower()}"
    path.write_bytes(_image_bytes(format))
    with Image.open(path) as check:  # Pillow itself reads the file as that format
        assert check.format == format
    loader.config = LoaderConfig(max_bytes=2**20)
    with pytest.raises(ImageLoadError, match="^not an image: not JPEG, PNG, GIF or WebP$"):
        loader.load(path.as_uri())
    assert ghostscript_runs == []
