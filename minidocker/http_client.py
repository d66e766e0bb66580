"""Chapter 4: HTTP/1.1, the protocol a registry is spoken to in.

HTTP/1.1 is lines of text over a TCP connection (RFC 9112).  The client
writes a request line, header lines, a blank line, then the body if there
is one; the server answers in the same shape, with a status line first::

    GET /v2/library/busybox/manifests/latest HTTP/1.1
    Host: registry-1.docker.io
    Accept: application/vnd.oci.image.index.v1+json, ...

    HTTP/1.1 200 OK
    Content-Type: application/vnd.oci.image.index.v1+json
    Content-Length: 9218

    {"manifests": [{"digest": "sha256:...", "platform": ...

HTTPS is the same text inside TLS.  Each request gets a connection of its
own ("Connection: close"), so there is nothing to pool and nothing gone
stale.  What remains are the rules a client must keep: where a body ends,
redirects, proxies, and distrust of every byte the server sends.

The engine has this client of its own instead of Python's ``http.client``
and ``urllib``: http.client brings the whole ``email`` package to parse
headers, urllib.request comes on top and urllib.parse brings
``ipaddress``, which together cost a pull some 30 to 50 ms of imports
before its first byte is sent.  A registry needs little of them: a request
line and headers out; a status line, headers and a body (with a
Content-Length, in chunks, or up to the close) back; redirects; a tunnel
through a proxy; TLS through :mod:`ssl`, imported only when the first HTTPS
request needs it.  The client keeps what urllib did (no Authorization
header after a redirect, HTTP errors come back as responses, the proxy
variables read as urllib reads them) and adds what urllib did not: limits
on the header section, and no control character in what it sends.

For the same reason it reads the few shapes it must check (a status line,
a header name, a port, a URL) with string methods and sets of characters,
not the ``re`` module; and it speaks to ``_socket``, the C module under
``socket``, whose Python half brings ``enum`` and ``selectors`` for what a
client does not use.  The two cost every pull ~8 ms of imports.
"""

import _socket
import io
import os

from minidocker import host

HEADER_LIMIT, HEADER_COUNT_LIMIT, REDIRECT_LIMIT = 64 * 1024, 100, 10
#: A body read whole (a token, an error, a body only drained) is a small
#: one: a server that sends more than this is refused.
WHOLE_BODY_LIMIT = 4 * 1024 * 1024
#: Seconds to wait for a connection, and then for each read from it.
TIMEOUT = 60
DEFAULT_PORTS = {"http": 80, "https": 443}

# Sets of characters, for only() below.
DIGITS = "0123456789"
HEX_DIGITS = DIGITS + "abcdefABCDEF"
HEX_BYTES = HEX_DIGITS.encode()
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN = LETTERS + DIGITS + "!#$%&'*+-.^_`|~"     # a field name (RFC 9110 §5.6.2)
VISIBLE = "".join(map(chr, range(0x21, 0x7f)))    # ASCII's printable characters but space
UNRESERVED = LETTERS + DIGITS + "-._~"           # what a URL holds unescaped (RFC 3986 §2.3)


def only(text, characters):
    """Say whether ``text`` is not empty and made of ``characters`` only.

    (``strip`` takes away the characters of the set from both ends: if
    anything is left, it begins with a character outside the set.)  Works
    on bytes too.
    """
    return bool(text) and not text.strip(characters)


#: getaddrinfo(3) failed: the host name does not resolve (``socket.gaierror``).
LookupFailed = _socket.gaierror


class ProtocolError(host.EngineError):
    """The server's answer cannot be read as HTTP/1.1; the message says why."""


class IncompleteBody(ProtocolError):
    """The connection closed before the end of the body the response announced."""


class ProxyFailed(OSError):
    """The proxy could not be reached, or would not open a tunnel."""


class TLSFailed(OSError):
    """The TLS handshake failed; ``reason`` is OpenSSL's name for why."""

    def __init__(self, ssl_error):
        super().__init__(str(ssl_error))
        self.reason = ssl_error.reason


def describe_error(error):
    """An error that stopped a request, in the few words a message shows."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, LookupFailed):
        return f"cannot resolve the host name ({error.strerror})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def send(method, url, headers, body, tls_context):
    """Send a request and return the :class:`Response`, following redirects.

    Registries redirect blob downloads to their storage; the Authorization
    header is the registry's, so it is not sent on.  ``tls_context()`` is
    called only for an https URL.
    """
    for _ in range(1 + REDIRECT_LIMIT):
        response = send_once(method, url, headers, body, tls_context)
        location = response.headers.get("Location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        response.close()
        url = resolve_url(url, location)
        host.narrate(4, f"    {response.status} redirect to {url.split('?')[0]}")
        headers = {name: value for name, value in headers.items()
                   if name.lower() != "authorization"}
        # RFC 9110 §15.4: after a 303 the user agent makes "a GET or HEAD
        # request", and after a 301 or 302 it "MAY change the request method
        # from POST to GET"; 307 and 308 keep the method and the body.
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = ("HEAD" if method == "HEAD" else "GET"), None
            headers.pop("Content-Type", None)
    raise ProtocolError(f"more than {REDIRECT_LIMIT} redirects, the last to {url.split('?')[0]}")


def send_once(method, url, headers, body, tls_context):
    """Open a connection, write one request on it, and read the response's head."""
    scheme, hostname, port, target = split_url(url)
    authority = join_authority(hostname, port, DEFAULT_PORTS[scheme])
    proxy = proxy_for(scheme, hostname, port)
    if proxy and scheme == "http":
        # RFC 9112 §3.2.2: "When making a request to a proxy, other than a
        # CONNECT or server-wide OPTIONS request, a client MUST send the
        # target URI in absolute-form."
        target = f"http://{authority}{target}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}", "User-Agent: minidocker",
             "Accept-Encoding: identity", "Connection: close"]
    if proxy and proxy.authorization and scheme == "http":
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body or b'')}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    # A CR or LF in a value would end its line and start a header of the
    # sender's choosing (request smuggling): only visible ASCII goes out.
    if not only(target, VISIBLE) or not all(only(line, " " + VISIBLE) for line in lines):
        raise host.EngineError(f"{method} {url.split('?')[0]}: refusing to send a request "
                               "line or header that holds a control character")
    connection = connect(scheme, hostname, port, proxy, tls_context)
    try:
        connection.sendall("".join(line + "\r\n" for line in lines).encode() + b"\r\n")
        if body:
            connection.sendall(body)
    except BaseException:
        connection.close()
        raise
    return Response(connection, method, authority)


def connect(scheme, hostname, port, proxy, tls_context):
    """A TCP connection to the server, or to the proxy; TLS on top for https."""
    if proxy is None:
        connection = open_connection(hostname, port)
    else:
        try:
            connection = open_connection(proxy.host, proxy.port)
        except OSError as error:
            raise ProxyFailed(f"{describe_error(error)} (the proxy {proxy.address})") from error
    if scheme == "http":
        return connection
    try:
        if proxy:
            open_tunnel(connection, hostname, port, proxy)
        return start_tls(connection, hostname, tls_context())
    except BaseException:
        connection.close()
        raise


def open_tunnel(connection, hostname, port, proxy):
    """Ask the proxy for a pipe to ``hostname:port`` (``CONNECT``, RFC 9110 §9.3.6).

    TLS then runs inside the pipe: the proxy sees only encrypted bytes.
    """
    authority = join_authority(hostname, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    connection.sendall("".join(line + "\r\n" for line in lines).encode() + b"\r\n")
    # Unbuffered, so that nothing after the blank line is read here: "Any
    # 2xx (Successful) response to a CONNECT request implies that the
    # connection will become a tunnel immediately after the empty line that
    # concludes the header fields" (RFC 9112 §6.3).
    with Received(connection) as stream:
        status, reason, _ = read_head(stream, proxy.address)
    if not 200 <= status < 300:
        raise ProxyFailed(f"the proxy {proxy.address} would not open a tunnel to "
                          f"{authority}: {status} {reason}")


def open_connection(hostname, port):
    """A TCP connection to ``hostname:port``, as ``socket.create_connection`` makes it.

    Each address getaddrinfo(3) gives for the name is tried in turn; if
    none answers, the last one's error is raised (``localhost`` is ``::1``,
    then 127.0.0.1: a refusal on the second says more than "IPv6 is off").
    """
    last_error = OSError(f"no address for {hostname}")
    for family, kind, protocol, _, address in _socket.getaddrinfo(
            _lookup_name(hostname), port, 0, _socket.SOCK_STREAM):
        connection = None
        try:
            # Even making the socket can fail (EAFNOSUPPORT for ::1 where
            # the kernel runs without IPv6): the next address is tried then.
            connection = _socket.socket(family, kind, protocol)
            connection.settimeout(TIMEOUT)
            connection.connect(address)
            return connection
        except OSError as error:
            if connection is not None:
                connection.close()
            last_error = error
    raise last_error


class Received(io.RawIOBase):
    """What a connection receives, as a stream (``socket.makefile("rb")`` without socket.py).

    Unbuffered as it is; ``io.BufferedReader(Received(connection))`` reads
    ahead.  Closing it leaves the connection open.
    """

    def __init__(self, connection):
        self.connection = connection

    def readable(self):
        return True

    def readinto(self, buffer):
        return self.connection.recv_into(buffer)


def _lookup_name(hostname):
    """The host name as getaddrinfo(3) takes it: bytes when it is plain ASCII.

    Python's socket module runs a str host name through the IDNA codec,
    which costs milliseconds to load; an ASCII name (every address, most
    names) is already what the resolver wants.
    """
    return hostname.encode("ascii") if hostname.isascii() else hostname


def start_tls(connection, hostname, context):
    """Speak TLS over ``connection``; the certificate must name ``hostname``.

    An address is not a host name: "Literal IPv4 and IPv6 addresses are
    not permitted in 'HostName'" (RFC 6066 §3, server name indication).
    Python leaves it out of the handshake itself, but only after running
    it through the IDNA codec (3 ms to load); an address whose certificate
    is not checked is therefore not handed over at all.
    """
    import ssl  # loaded already: the context was made with it

    name = None if is_address(hostname) and not context.check_hostname else hostname
    try:
        return context.wrap_socket(connection, server_hostname=name)
    except ssl.SSLError as error:
        raise TLSFailed(error) from error


def is_address(hostname):
    """Say whether ``hostname`` is an IP address (an IPv6 one has colons), not a name."""
    return ":" in hostname or only(hostname, DIGITS + ".")


def speaks_tls(url):
    """Say whether the server of an https ``url`` answers a TLS hello in TLS.

    Docker tries an insecure registry over HTTPS first and falls back to
    plain HTTP when TLS fails.  Finding out with :mod:`ssl` costs a pull
    ~10 ms of loading OpenSSL's TLS half before its first request; this
    asks the same question with a hand-made hello.  A TLS server answers
    in TLS records, and a record (RFC 8446 §5.1, ``TLSPlaintext``) starts
    with its ``ContentType``, ``handshake(22)`` for the server's hello or
    ``alert(21)`` if it refuses ours, then a ``legacy_record_version``
    whose first byte is 3 in every version of TLS.  A plain HTTP server
    answers text (``HTTP/1.1 400 Bad Request``) or closes.  Through a proxy
    the answer would be the proxy's, so there only a real handshake
    decides: this says True.
    """
    scheme, hostname, port, _ = split_url(url)
    if proxy_for(scheme, hostname, port):
        return True
    connection = open_connection(hostname, port)
    answer = b""
    try:
        connection.sendall(client_hello(hostname))
        while len(answer) < 2 and (piece := connection.recv(2 - len(answer))):
            answer += piece
    except (ConnectionResetError, BrokenPipeError):
        pass  # closed on the hello without reading it: not TLS either
    finally:
        connection.close()
    return len(answer) == 2 and answer[0] in (21, 22) and answer[1] == 3


def client_hello(hostname):
    """A TLS 1.2 ClientHello record (RFC 5246 §7.4.1.2) that a TLS server answers in TLS.

    (A server that speaks only TLS 1.3 answers it with an alert, a TLS
    record too: that is all the probe asks.)

    It offers common cipher suites and says which curves and signatures it
    takes, as every browser does, and names the server (RFC 6066 §3) when
    ``hostname`` is a name, not an address: a server may refuse it, but
    only with an alert, which is TLS too.  (A plain HTTP server reads it as
    a request line, which its first 0x0a byte ends: at the latest the one
    in the supported-groups extension's type, 0x000a.)
    """
    def vector(data, length_bytes=2):
        return len(data).to_bytes(length_bytes, "big") + data

    def numbers(*values):
        return b"".join(value.to_bytes(2, "big") for value in values)

    suites = numbers(0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0x009c, 0x009d,
                     0x1301, 0x1302, 0x1303)
    extensions = (numbers(0x000a) + vector(vector(numbers(0x001d, 0x0017, 0x0018)))   # groups
                  + numbers(0x000b) + vector(vector(b"\0", 1))                       # points
                  + numbers(0x000d) + vector(vector(numbers(                          # signatures
                      0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601))))
    if not is_address(hostname):
        # server_name: a list of one (NameType host_name(0), HostName)
        extensions += numbers(0x0000) + vector(vector(b"\0" + vector(hostname.encode())))
    hello = (numbers(0x0303) + os.urandom(32) + vector(b"", 1) + vector(suites)
             + vector(b"\0", 1) + vector(extensions))
    handshake = b"\x01" + vector(hello, 3)     # HandshakeType client_hello
    return b"\x16" + numbers(0x0301) + vector(handshake)   # a handshake record


class Response:
    """A response's ``status``, ``reason`` and ``headers``; its body is read on demand.

    ``read(n)`` returns the next ``n`` bytes, fewer only at the body's end
    (``b""`` there); ``read()`` returns all that is left; ``readinto(buffer)``
    fills a buffer the caller keeps and returns the count.  The connection
    closes at the body's end, or on :meth:`close`.
    """

    def __init__(self, connection, method, where):
        self.connection, self.where = connection, where
        self.stream = io.BufferedReader(Received(connection), 64 * 1024)
        self.chunked, self.remaining, self.finished = False, None, False
        try:
            self.status = 100
            while self.status < 200:
                # "A client MUST be able to parse one or more 1xx responses
                # received prior to a final response" (RFC 9110 §15.2).
                self.status, self.reason, self.headers = read_head(self.stream, where)
            self._find_the_end_of_the_body(method)
        except BaseException:
            self.close()
            raise

    def _find_the_end_of_the_body(self, method):
        """Where the body ends: RFC 9112 §6.3, "Message Body Length"."""
        codings = [coding.strip().lower() for value in self.headers.get_all("Transfer-Encoding")
                   for coding in value.split(",")]
        lengths = {length.strip() for value in self.headers.get_all("Content-Length")
                   for length in value.split(",")}
        if method == "HEAD" or self.status in (204, 304):
            # "Any response to a HEAD request and any response with a 1xx
            # (Informational), 204 (No Content), or 304 (Not Modified) status
            # code is always terminated by the first empty line"
            self.remaining = 0
        elif codings:
            # "If a Transfer-Encoding header field is present and the chunked
            # transfer coding is the final encoding, the message body length
            # is determined by reading and decoding the chunked data".  We
            # send no TE header, so no other coding may come.
            if codings != ["chunked"]:
                raise ProtocolError(f"{self.where} sent the transfer coding "
                                    f"{', '.join(codings)!r}, which this client does not read")
            self.chunked, self.remaining = True, 0
        elif lengths:
            # "If a message is received without Transfer-Encoding and with an
            # invalid Content-Length header field, then the message framing
            # is invalid and the recipient MUST treat it as an unrecoverable
            # error"
            # (At most 18 digits: int() refuses texts of more than 4,300, and
            # no body is an exabyte.)
            if len(lengths) != 1 or not host.is_decimal(min(lengths)) or len(min(lengths)) > 18:
                raise ProtocolError(f"{self.where} sent an invalid Content-Length: "
                                    f"{self.headers.get('Content-Length')!r}")
            self.remaining = int(min(lengths))
        # Otherwise "the message body length is determined by the number of
        # octets received prior to the server closing the connection".
        if self.remaining == 0 and not self.chunked:
            self.close()

    def read(self, size=-1):
        if size is None or size < 0:
            # Read whole (a token, an error, a body nobody needs): a server
            # that never stops sending must not fill the memory.
            body = self.read(WHOLE_BODY_LIMIT + 1)
            if len(body) > WHOLE_BODY_LIMIT:
                self.close()
                raise ProtocolError(f"{self.where} sent a body larger than {WHOLE_BODY_LIMIT} "
                                    "bytes where a small one was expected")
            return body
        pieces = []
        while size > 0 and (count := self._next_count(size)):
            piece = self.stream.read(count)
            self._advance(len(piece), count)
            pieces.append(piece)
            size -= len(piece)
        return b"".join(pieces)

    def readinto(self, buffer):
        view, filled = memoryview(buffer).cast("B"), 0
        while filled < len(view) and (count := self._next_count(len(view) - filled)):
            got = self.stream.readinto(view[filled:filled + count])
            self._advance(got, count)
            filled += got
        return filled

    def close(self):
        self.finished = True
        self.stream.close()
        self.connection.close()

    def _next_count(self, wanted):
        """How many bytes the next read from the connection may take; 0 at the end."""
        if self.chunked and self.remaining == 0 and not self.finished:
            self._start_chunk()
        if self.finished:
            return 0
        return wanted if self.remaining is None else min(wanted, self.remaining)

    def _advance(self, got, asked):
        """Count ``got`` bytes read of ``asked``; fewer means the connection closed."""
        if got < asked:
            self.close()
            if self.remaining is not None:
                raise IncompleteBody(f"{self.where} closed the connection before the end "
                                     "of the body")
        elif self.remaining is not None:
            self.remaining -= got
            if self.remaining == 0 and not self.chunked:
                self.close()
            elif self.remaining == 0:
                # chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                end = self.stream.readline(3)
                if end not in (b"\r\n", b"\n"):
                    raise (ProtocolError if end else IncompleteBody)(
                        f"{self.where} sent a chunk that does not end where its size says")

    def _start_chunk(self):
        """Read the next chunk's size line (RFC 9112 §7.1); after the last, the trailers."""
        line = self.stream.readline(1024)
        # "A recipient MUST ignore unrecognized chunk extensions" (after ";").
        size = line.split(b";")[0].strip()
        if not line.endswith(b"\n") or len(size) > 16 or not only(size, HEX_BYTES):
            raise (ProtocolError if line else IncompleteBody)(
                f"{self.where} sent an invalid chunk size line: {line[:40]!r}")
        self.remaining = int(size, 16)
        if self.remaining == 0:
            # last-chunk, then trailer fields up to a blank line: none is needed.
            for _ in header_lines(self.stream, self.where):
                pass
            self.close()


class Headers:
    """A message's header fields; a name is found whatever its case (RFC 9110 §5.1)."""

    def __init__(self, fields):
        self.fields = fields

    def get_all(self, name):
        return [value for field, value in self.fields if field.lower() == name.lower()]

    def get(self, name, default=None):
        values = self.get_all(name)
        return values[0] if values else default


def read_head(stream, where):
    """Read a status line and header fields; return ``(status, reason, Headers)``."""
    lines = header_lines(stream, where)
    status_line = next(lines, "")
    status = parse_status_line(status_line)
    if not status:
        raise ProtocolError(f"{where} does not answer in HTTP/1.1: {status_line[:80]!r}")
    fields = []
    for line in lines:
        name, colon, value = line.partition(":")
        if line[0] in " \t" and fields:
            # A line that starts with a space continues the one before: "A user
            # agent ... MUST replace each received obs-fold with one or more SP
            # octets" (RFC 9112 §5.2).
            (name, value), colon = fields.pop(), ":"
            value += " " + line.lstrip(" \t")
        # field-line = field-name ":" OWS field-value OWS  (RFC 9112 §5), and
        # "Field values containing CR, LF, or NUL characters are invalid and
        # dangerous" (RFC 9110 §5.5).
        if not colon or not only(name, TOKEN) or "\r" in value or "\0" in value:
            raise ProtocolError(f"{where} sent an invalid header line: {line[:80]!r}")
        fields.append((name, value.strip(" \t")))
    return *status, Headers(fields)


def parse_status_line(line):
    """``(status, reason)`` of a status line, or None if it is not one.

    status-line = HTTP-version SP status-code SP [ reason-phrase ]
    (RFC 9112 §4), with a version 1.x and a code from 100 to 999; the
    reason may be left out, with its space.
    """
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if len(version) != 8 or not version.startswith("HTTP/1.") or version[7] not in DIGITS \
            or len(code) != 3 or not host.is_decimal(code) or code[0] == "0":
        return None
    return int(code), reason


def header_lines(stream, where):
    """Yield the lines of a header section as text, up to the blank line that ends it.

    One at a time, so that a first line that is not HTTP is refused at once.
    A hostile server could send header lines forever: more than
    ``HEADER_LIMIT`` bytes or ``HEADER_COUNT_LIMIT`` lines is refused.
    """
    budget = HEADER_LIMIT
    for count in range(HEADER_COUNT_LIMIT + 2):  # a first line, the fields, a blank line
        line = stream.readline(budget + 1)
        if len(line) > budget:
            break
        if not line.endswith(b"\n"):
            raise ConnectionError(f"{where} closed the connection " +
                                  ("before the end of the headers" if count or line
                                   else "without answering"))
        budget -= len(line)
        # RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line
        # terminator and ignore any preceding CR."
        line = line[:-1].removesuffix(b"\r")
        if not line:
            return
        yield line.decode("latin-1")
    raise ProtocolError(f"{where} sent more than {HEADER_LIMIT} bytes or "
                        f"{HEADER_COUNT_LIMIT} lines of headers")


class Proxy:
    """A proxy the environment names: ``[http://][user:password@]host[:port]``."""

    def __init__(self, text):
        scheme, separator, rest = text.partition("://")
        if not separator:
            scheme, rest = "http", text
        credentials, _, self.address = rest.split("/")[0].rpartition("@")
        if scheme.lower() != "http":
            raise host.EngineError(f"proxy {scheme}://{self.address}: minidocker talks to "
                                   "proxies in plain http:// only")
        self.host, self.port = split_authority(self.address, 80)
        user, _, password = (percent_decode(part) for part in credentials.partition(":"))
        self.authorization = basic_header((user, password)) if user and password else None


def proxy_for(scheme, hostname, port):
    """The :class:`Proxy` for a request to ``hostname:port``, or None.

    Read as urllib reads them: ``https_proxy`` for https, ``http_proxy``
    for http, lower case before upper case.  ``no_proxy`` lists the hosts
    reached directly: ``*`` means all; an entry names a host and every
    domain under it (``example.com`` and ``.example.com`` both match
    ``a.example.com``), on any port or on the one it gives
    (``example.com:5000``).
    """
    setting = environment_setting(f"{scheme}_proxy")
    no_proxy = environment_setting("no_proxy").strip().lower()
    if not setting or no_proxy == "*":
        return None
    names = {hostname, join_authority(hostname, port)}
    for entry in no_proxy.split(","):
        entry = entry.strip().lstrip(".")
        if entry and any(name == entry or name.endswith("." + entry) for name in names):
            return None
    return Proxy(setting)


def environment_setting(name):
    """An environment variable spelt in lower case, else in upper case (urllib's order)."""
    return os.environ[name] if name in os.environ else os.environ.get(name.upper(), "")


def basic_header(credentials):
    """The ``Authorization`` value for a ``(user, password)`` pair (RFC 7617, Basic)."""
    import base64

    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# URLs: the few parts of RFC 3986 a registry client needs.

def split_url(url):
    """Split ``http(s)://host[:port]/path?query`` into ``(scheme, host, port, path?query)``.

    The scheme is read whatever its case; a ``#fragment`` is left out.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in DEFAULT_PORTS:
        raise host.EngineError(f"not an http:// or https:// URL: {url!r}")
    authority, path = split_at_first(rest, "/?#")
    hostname, port = split_authority(authority, DEFAULT_PORTS[scheme])
    return scheme, hostname, port, "/" + path.partition("#")[0].removeprefix("/")


def split_authority(authority, default_port=None):
    """Split ``host[:port]`` (``[::1]:5000`` for IPv6) into the host name and the port.

    A name is letters, digits, ``.``, ``_`` and ``-``; an IPv6 address in
    brackets is hex digits, ``:`` and ``.``; a port is 1 to 65535.
    """
    if authority.startswith("["):
        hostname, bracket, rest = authority[1:].partition("]")
        valid = bracket and only(hostname, HEX_DIGITS + ":.")
    else:
        hostname, colon, port = authority.partition(":")
        rest = colon + port
        valid = only(hostname, LETTERS + DIGITS + "._-")
    port = rest[1:]
    if not valid or rest and (rest[0] != ":" or len(port) > 5 or not host.is_decimal(port)
                              or not 0 < int(port) < 65536):
        raise host.EngineError(f"invalid host name or port: {authority!r}")
    return hostname.lower(), int(port) if port else default_port


def split_at_first(text, characters):
    """Split ``text`` where the first of ``characters`` is (that one starts the second part)."""
    end = min((index for index in map(text.find, characters) if index >= 0), default=len(text))
    return text[:end], text[end:]


def join_authority(hostname, port, default_port=None):
    """``host:port`` as a URL writes it; a scheme's default port is left out."""
    shown = f"[{hostname}]" if ":" in hostname else hostname
    return shown if port == default_port else f"{shown}:{port}"


def resolve_url(base, location):
    """The absolute URL a ``Location`` header means, read from ``base`` (RFC 3986 §5.2)."""
    scheme, _, rest = base.partition("://")
    authority, rest = split_at_first(rest, "/?#")
    path, _ = split_at_first(rest, "?#")
    # scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ":" (RFC 3986 §3.1)
    other_scheme, colon, _ = location.partition(":")
    if colon and other_scheme[:1] in LETTERS and only(other_scheme, LETTERS + DIGITS + "+-."):
        return location
    if location.startswith("//"):
        return f"{scheme}:{location}"
    if location.startswith("/"):
        return f"{scheme}://{authority}{location}"
    if location.startswith("?"):
        return f"{scheme}://{authority}{path}{location}"
    return f"{scheme}://{authority}{path.rpartition('/')[0]}/{location}"


def percent_encode(text):
    """Escape all but letters, digits and ``-._~`` as ``%XX`` (RFC 3986 §2.3)."""
    return "".join(character if character in UNRESERVED else
                   "".join(f"%{byte:02X}" for byte in character.encode()) for character in text)


def percent_decode(text):
    """Undo :func:`percent_encode` (in a proxy URL's user name and password).

    A ``%`` not followed by two hex digits stays as it is.
    """
    first, *rest = text.encode().split(b"%")
    pieces = [first]
    for piece in rest:
        escape = piece[:2]
        pieces.append(bytes([int(escape, 16)]) + piece[2:]
                      if len(escape) == 2 and only(escape, HEX_BYTES) else b"%" + piece)
    return b"".join(pieces).decode(errors="replace")
