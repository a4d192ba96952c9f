"""Fetching untrusted URLs over HTTP(S) without being steered into the local network.

A host name is resolved once, every address it resolves to must be globally routable
(`AddressPolicy`), and the connection goes to the address that was checked: the name is kept only
for the Host header and for TLS (SNI and the certificate check). There is no second DNS lookup
that a rebinding DNS server could answer differently. Each redirect is checked the same way.

A download has a read timeout for each socket operation and an overall deadline, which covers the
DNS lookups too: at the deadline a watchdog shuts the socket down, so a server that sends one byte
a second (in its headers or its body) cannot hold a worker past the deadline, and whatever it cut
short (a header block too) is recorded as the deadline, not as what the partial response looked like.

The only way to reach loopback or private addresses is to pass another `AddressPolicy` object in
code (tests do, for their local servers); no setting or environment variable can.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 6598 shared address space (carrier-grade NAT); one cloud's metadata service is 100.100.100.200.
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
REDIRECT_CODES = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """Why a URL could not be fetched; the message is the recorded reason."""


def is_public_address(address: IPAddress) -> bool:
    """True only for a globally routable unicast address (IPv6 forms that embed IPv4 are unwrapped)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if address.is_site_local:
            return False
    if address in SHARED_ADDRESS_SPACE:
        return False
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
        or address.is_reserved or address.is_unspecified
    )


class AddressPolicy:
    """Resolves a host (once per connection) and says which addresses may be connected to."""

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))

    def permits(self, address: IPAddress) -> bool:
        return is_public_address(address)


PUBLIC_INTERNET = AddressPolicy()


@dataclass(frozen=True)
class FetchLimits:
    timeout_seconds: float = 10.0  # connect and each read
    deadline_seconds: float = 30.0  # the whole download, redirects included
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    content_type_prefix: str = "image/"
    user_agent: str = "zipp-assets/0.1 (research pipeline)"


def fetch(url: str, limits: FetchLimits = FetchLimits(), policy: AddressPolicy = PUBLIC_INTERNET) -> bytes:
    """The body of `url`, or FetchError with the reason."""
    deadline = time.monotonic() + limits.deadline_seconds
    current = url
    for hop in range(limits.max_redirects + 1):
        parts = urlsplit(current)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError("unsafe redirect: to a non-http scheme" if hop else f"unsupported scheme {scheme!r}")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise FetchError("bad url: invalid port") from None
        host = parts.hostname or ""
        try:
            addresses = _checked_addresses(host, port, policy, deadline, limits)
        except FetchError as exc:
            raise FetchError(f"unsafe redirect: {exc}" if hop and str(exc).startswith("unsafe") else str(exc)) from None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        location = _get(scheme, host, port, addresses, target, limits, deadline)
        if isinstance(location, bytes):
            return location
        current = urljoin(current, location)
    raise FetchError(f"dead link: more than {limits.max_redirects} redirects")


def _deadline_passed(limits: FetchLimits) -> FetchError:
    return FetchError(f"dead link: deadline of {limits.deadline_seconds}s passed")


def _resolve_by(deadline: float, policy: AddressPolicy, host: str, port: int) -> list[IPAddress] | None:
    """`policy.resolve`, or None if it has not answered by the deadline. getaddrinfo has no timeout of
    its own and cannot be interrupted, so it runs on a daemon thread that a late answer leaves behind
    (the thread ends with the resolver's own timeout)."""
    answer: dict = {}

    def run() -> None:
        try:
            answer["addresses"] = policy.resolve(host, port)
        except BaseException as exc:  # re-raised on the caller's thread
            answer["error"] = exc

    thread = threading.Thread(target=run, name="resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        return None
    if "error" in answer:
        raise answer["error"]
    return answer["addresses"]


def _checked_addresses(host: str, port: int, policy: AddressPolicy, deadline: float,
                       limits: FetchLimits) -> list[IPAddress]:
    if not host:
        raise FetchError("bad url: no host")
    try:
        addresses = _resolve_by(deadline, policy, host, port)
        if addresses is None:
            raise _deadline_passed(limits)
    except (OSError, UnicodeError, ValueError) as exc:
        raise FetchError(f"unreachable: cannot resolve host ({exc})") from None
    if not addresses:
        raise FetchError("unreachable: host has no address")
    refused = [a for a in addresses if not policy.permits(a)]
    if refused:  # one bad answer taints the name: never pick among them
        raise FetchError(f"unsafe host: resolves to a non-public address ({refused[0]})")
    return addresses


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to a checked address; `host` is used only for the Host header, SNI and the certificate."""

    def __init__(self, host: str, port: int, address: IPAddress, timeout: float, tls: ssl.SSLContext | None):
        super().__init__(host, port, timeout=timeout)
        self.default_port = 443 if tls else 80  # the Host header names the port only when it is not the default
        self.address = address
        self.tls = tls
        self.raw_socket: socket.socket | None = None
        self.aborted = threading.Event()

    def connect(self) -> None:
        self.raw_socket = socket.create_connection((str(self.address), self.port), self.timeout)
        if self.aborted.is_set():
            self.abort()
        self.sock = self.tls.wrap_socket(self.raw_socket, server_hostname=self.host) if self.tls else self.raw_socket

    def abort(self) -> None:
        """From the watchdog thread: any blocked read or write returns at once."""
        self.aborted.set()
        if self.raw_socket is not None:
            try:
                self.raw_socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _get(scheme, host, port, addresses, target, limits: FetchLimits, deadline: float) -> bytes | str:
    """One GET: the body, or the Location of a redirect."""
    last_error: FetchError | None = None
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        tls = ssl.create_default_context() if scheme == "https" else None
        connection = _PinnedConnection(host, port, address, min(limits.timeout_seconds, remaining), tls)
        watchdog = threading.Timer(remaining, connection.abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            return _exchange(connection, target, limits, deadline)
        except FetchError:
            if connection.aborted.is_set():  # what the watchdog cut short (headers too) is the deadline's
                break
            raise
        except (TimeoutError, socket.timeout):
            if connection.aborted.is_set():
                break
            raise FetchError(f"dead link: timeout after {limits.timeout_seconds}s") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if connection.aborted.is_set():
                break
            if connection.sock is None:  # could not connect to this address: try the next one
                last_error = FetchError(f"dead link: unreachable ({exc})")
                continue
            raise FetchError(f"dead link: unreachable ({type(exc).__name__})") from None
        finally:
            watchdog.cancel()
            connection.close()
    if last_error is not None and time.monotonic() < deadline:
        raise last_error
    raise _deadline_passed(limits)


def _exchange(connection: _PinnedConnection, target: str, limits: FetchLimits, deadline: float) -> bytes | str:
    connection.request("GET", target, headers={"User-Agent": limits.user_agent, "Accept": f"{limits.content_type_prefix}*",
                                              "Accept-Encoding": "identity"})
    response = connection.getresponse()
    if response.status in REDIRECT_CODES:
        location = response.getheader("Location")
        if not location:
            raise FetchError(f"dead link: HTTP {response.status} without a Location")
        return location
    if response.status != 200:
        raise FetchError(f"dead link: HTTP {response.status}")
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if not content_type.startswith(limits.content_type_prefix):
        raise FetchError(f"not an image: content type {content_type or 'missing'!r}")
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > limits.max_bytes:
        raise FetchError(f"too large: {length} bytes > {limits.max_bytes}")
    chunks, total = [], 0
    while True:
        if time.monotonic() > deadline:
            connection.abort()
            raise TimeoutError("deadline")
        chunk = response.read1(64 * 1024)  # at most one read on the socket: the deadline is checked between
        if not chunk:
            break
        total += len(chunk)
        if total > limits.max_bytes:
            raise FetchError(f"too large: more than {limits.max_bytes} bytes")
        chunks.append(chunk)
    if connection.aborted.is_set():  # the watchdog cut the body short
        raise TimeoutError("deadline")
    return b"".join(chunks)
