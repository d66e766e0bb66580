"""Registries and images for chapter 4's tests, built from tools nobody here wrote.

* :class:`RegistryServer` runs Debian's ``docker-registry`` (distribution
  2.8) on 127.0.0.1 with its own storage directory, optionally behind
  htpasswd basic auth or behind bearer-token auth served by
  :class:`TokenServer` (the same WWW-Authenticate flow Docker Hub uses).
* :func:`build_layout` makes test images with ``umoci`` from the host's
  busybox: a one-layer image, a three-layer image whose upper layers delete a
  file and make a directory opaque (real whiteouts), and a second platform.
* :func:`skopeo_push` copies them into the registry in OCI or Docker v2
  schema 2 form; :func:`put_manifest` pushes an index over plain HTTP.
* :class:`FakeRegistry` is a tiny ``http.server`` that serves whatever a test
  tells it to (wrong digests, truncated blobs, a 500 before a 200), because a
  real registry refuses to serve broken content.

Every server listens on 127.0.0.1 only (the network rule).
"""

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.request

from helpers.images import make_busybox_rootfs

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def free_port():
    """Ask the kernel for a free TCP port on the loopback address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port, timeout=10, ip="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the real registry ---------------------------------------------------

class RegistryServer:
    """Debian's ``docker-registry`` on 127.0.0.1, with its own storage.

    ``auth`` is None (anonymous), ``("htpasswd", user, password)`` or
    ``("token", token_server)``.
    """

    def __init__(self, workdir, auth=None, tls=None, ip="127.0.0.1"):
        self.workdir = workdir
        self.port = free_port()
        self.ip = ip
        self.address = f"{ip}:{self.port}"
        self.tls = tls
        os.makedirs(workdir, exist_ok=True)
        config = os.path.join(workdir, "config.yml")
        with open(config, "w") as handle:
            handle.write(self._config(auth))
        self.log = open(os.path.join(workdir, "registry.log"), "wb")
        self.process = subprocess.Popen(["docker-registry", "serve", config],
                                        stdout=self.log, stderr=self.log)
        try:
            wait_for_port(self.port, ip=ip)
        except RuntimeError:
            self.stop()
            raise

    def _config(self, auth):
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {os.path.join(self.workdir, 'storage')}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.address}",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
        if auth and auth[0] == "htpasswd":
            _, user, password = auth
            path = os.path.join(self.workdir, "htpasswd")
            entry = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                   capture_output=True, text=True).stdout
            with open(path, "w") as handle:
                handle.write(entry)
            lines += ["auth:", "  htpasswd:", "    realm: minidocker-test",
                      f"    path: {path}"]
        elif auth and auth[0] == "token":
            tokens = auth[1]
            lines += ["auth:", "  token:",
                      f"    realm: {tokens.realm}",
                      f"    service: {tokens.service}",
                      f"    issuer: {tokens.issuer}",
                      f"    rootcertbundle: {tokens.certificate}"]
        return "\n".join(lines) + "\n"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def make_certificates(workdir, ip):
    """Make a CA and a server certificate for ``ip`` signed by it, with openssl.

    Returns ``(ca certificate, server certificate, server key)`` paths.
    """
    os.makedirs(workdir, exist_ok=True)
    path = lambda name: os.path.join(workdir, name)  # noqa: E731
    def openssl(*arguments):
        subprocess.run(["openssl", *arguments], check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", path("ca.key"), "-out", path("ca.crt"),
            "-subj", "/CN=minidocker test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", path("server.key"),
            "-out", path("server.csr"), "-subj", f"/CN={ip}")
    with open(path("server.ext"), "w") as handle:
        handle.write(f"subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n"
                     "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", path("server.csr"), "-CA", path("ca.crt"),
            "-CAkey", path("ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", path("server.ext"), "-out", path("server.crt"))
    return path("ca.crt"), path("server.crt"), path("server.key")


# -- a bearer-token server, as auth.docker.io is -------------------------

def _base64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Issue JSON Web Tokens the registry trusts, and remember every request.

    The registry answers an anonymous request with ``401`` and
    ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; the client
    asks this server for a token for that scope and retries with it.  The
    tokens are RS256 JWTs signed with a key made here by ``openssl``; the
    registry trusts its self-signed certificate (``rootcertbundle``).
    ``users`` maps user names to passwords: with it, only those users get
    push rights; anonymous requests get pull only.
    """

    service = "minidocker-test-registry"
    issuer = "minidocker-test-issuer"

    def __init__(self, workdir, users=None):
        os.makedirs(workdir, exist_ok=True)
        self.key = os.path.join(workdir, "token.key")
        self.certificate = os.path.join(workdir, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", self.key, "-out", self.certificate, "-days", "2",
                        "-subj", "/CN=minidocker-test-token"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.certificate, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users = users or {}
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server._answer(self)

            def log_message(self, *arguments):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _answer(self, handler):
        from urllib.parse import parse_qs, urlsplit
        query = parse_qs(urlsplit(handler.path).query)
        user = self._user(handler.headers.get("Authorization"))
        self.requests.append({"path": handler.path, "user": user, "query": query})
        if user is False:
            handler.send_response(401)
            handler.end_headers()
            handler.wfile.write(b'{"details":"wrong user name or password"}')
            return
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            allowed = [action for action in actions.split(",")
                       if action == "pull" or user]
            access.append({"type": kind, "name": name, "actions": allowed})
        token = self.sign({
            "iss": self.issuer, "sub": user or "", "aud": self.service,
            "exp": int(time.time()) + 300, "nbf": int(time.time()) - 10,
            "iat": int(time.time()), "jti": os.urandom(8).hex(), "access": access})
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _user(self, authorization):
        """None for anonymous, the name for good credentials, False for bad ones."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        name, _, password = base64.b64decode(value).decode().partition(":")
        return name if self.users.get(name) == password else False

    def sign(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (_base64url(json.dumps(header).encode()) + "." +
                         _base64url(json.dumps(claims).encode()))
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return signing_input + "." + _base64url(signature)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# -- test images, built with umoci ---------------------------------------

def umoci(*arguments):
    subprocess.run(["umoci", *arguments], check=True, capture_output=True)


def layer_tar(entries):
    """Make an uncompressed layer: ``entries`` is a list of ``(TarInfo, bytes)``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return buffer.getvalue()


def tar_entry(name, kind=tarfile.REGTYPE, mode=0o644, data=None, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.mtime = 1_700_000_000
    return info, data


def build_layout(workdir):
    """Build the test images in an OCI layout and return its path.

    Tags:

    * ``busybox`` — one layer: the busybox rootfs; cmd ``/bin/sh``.
    * ``layered`` — three layers: busybox; then ``/etc/platform`` deleted
      and ``/var/www/old.html`` added (umoci writes ``.wh.`` whiteouts); then
      ``/var/www`` made opaque (``.wh..wh..opq``) with only ``fresh.html``.
    * ``arm64`` — busybox marked linux/arm64, with ``/etc/platform`` saying so
      (for the multi-platform index; it is never run).
    """
    layout = os.path.join(workdir, "layout")
    bundle = os.path.join(workdir, "bundle")
    umoci("init", "--layout", layout)
    umoci("new", "--image", f"{layout}:busybox")
    umoci("unpack", "--image", f"{layout}:busybox", bundle)
    make_busybox_rootfs(os.path.join(bundle, "rootfs"))
    with open(os.path.join(bundle, "rootfs", "etc", "platform"), "w") as handle:
        handle.write("linux/amd64\n")
    umoci("repack", "--image", f"{layout}:busybox", bundle)
    umoci("config", "--image", f"{layout}:busybox", "--config.cmd", "/bin/sh",
          "--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "--architecture", "amd64",
          "--os", "linux")
    shutil.rmtree(bundle)

    umoci("unpack", "--image", f"{layout}:busybox", bundle)
    rootfs = os.path.join(bundle, "rootfs")
    os.remove(os.path.join(rootfs, "etc", "platform"))
    with open(os.path.join(rootfs, "var", "www", "old.html"), "w") as handle:
        handle.write("old\n")
    umoci("repack", "--image", f"{layout}:layered", bundle)
    shutil.rmtree(bundle)
    opaque = layer_tar([
        tar_entry("var/www/", tarfile.DIRTYPE, 0o755),
        tar_entry("var/www/.wh..wh..opq", data=b""),
        tar_entry("var/www/fresh.html", data=b"fresh\n"),
    ])
    opaque_path = os.path.join(workdir, "opaque.tar")
    with open(opaque_path, "wb") as handle:
        handle.write(opaque)
    umoci("raw", "add-layer", "--image", f"{layout}:layered", opaque_path)
    os.remove(opaque_path)

    umoci("unpack", "--image", f"{layout}:busybox", bundle)
    with open(os.path.join(bundle, "rootfs", "etc", "platform"), "w") as handle:
        handle.write("linux/arm64\n")
    umoci("repack", "--image", f"{layout}:arm64", bundle)
    umoci("config", "--image", f"{layout}:arm64", "--architecture", "arm64",
          "--os", "linux")
    shutil.rmtree(bundle)
    return layout


def skopeo_push(layout, tag, destination, format="oci", credentials=None):
    """Copy ``layout:tag`` to ``docker://destination`` in ``format`` (oci/v2s2)."""
    argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--format", format]
    if credentials:
        argv += ["--dest-creds", credentials]
    argv += [f"oci:{layout}:{tag}", f"docker://{destination}"]
    subprocess.run(argv, check=True, capture_output=True)


def skopeo_inspect(reference, raw=False, credentials=None):
    """Return ``skopeo inspect`` output for ``reference`` as parsed JSON."""
    argv = ["skopeo", "inspect", "--tls-verify=false"]
    if raw:
        argv.append("--raw")
    if credentials:
        argv += ["--creds", credentials]
    argv.append(reference)
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"skopeo inspect {reference} failed: {result.stderr}")
    return json.loads(result.stdout)


def get_manifest(address, repository, reference, media_types=(OCI_MANIFEST, DOCKER_MANIFEST)):
    """Fetch a manifest from an anonymous registry; return (bytes, media type)."""
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{reference}",
        headers={"Accept": ", ".join(media_types)})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read(), response.headers.get("Content-Type")


def put_manifest(address, repository, tag, body, media_type):
    """Push a manifest (or index) to an anonymous registry over plain HTTP."""
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{tag}", data=body, method="PUT",
        headers={"Content-Type": media_type})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("Docker-Content-Digest")


def push_index(address, repository, tag, entries, media_type=OCI_INDEX):
    """Push an index of ``(repository_tag, architecture)`` images already pushed."""
    manifests = []
    for source_tag, architecture in entries:
        body, manifest_type = get_manifest(address, repository, source_tag)
        manifests.append({"mediaType": manifest_type, "digest": sha256(body),
                          "size": len(body),
                          "platform": {"architecture": architecture, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": media_type,
                        "manifests": manifests}).encode()
    put_manifest(address, repository, tag, index, media_type)
    return sha256(index)


# -- a registry that serves whatever it is told --------------------------

class FakeRegistry:
    """A small ``http.server`` speaking just enough of the distribution API.

    ``routes`` maps a request path to a list of answers ``(status, headers,
    body)``; each request takes the next answer and the last one repeats, so
    ``[(500, {}, b""), (200, {...}, body)]`` fails once then works.  Every
    request is recorded in ``requests``.
    """

    def __init__(self):
        self.routes = {}
        self.requests = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                fake._answer(self)

            def do_HEAD(self):
                fake._answer(self, head=True)

            def log_message(self, *arguments):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _answer(self, handler, head=False):
        self.requests.append((handler.command, handler.path))
        answers = self.routes.get(handler.path.split("?")[0])
        if handler.path == "/v2/" and answers is None:
            answers = [(200, {"Content-Type": "application/json"}, b"{}")]
        if answers is None:
            answers = [(404, {"Content-Type": "application/json"},
                        b'{"errors":[{"code":"NOT_FOUND","message":"not here"}]}')]
        status, headers, body = answers[0] if len(answers) == 1 else answers.pop(0)
        handler.send_response(status)
        declared_length = headers.get("Content-Length", str(len(body)))
        for name, value in headers.items():
            if name != "Content-Length":
                handler.send_header(name, value)
        handler.send_header("Content-Length", declared_length)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)
        if declared_length != str(len(body)):
            handler.close_connection = True

    def serve_blob(self, repository, data, digest=None, truncate_to=None):
        """Serve ``data`` as a blob under ``digest`` (its own by default)."""
        digest = digest or sha256(data)
        headers = {"Content-Type": "application/octet-stream",
                   "Content-Length": str(len(data)), "Docker-Content-Digest": digest}
        body = data if truncate_to is None else data[:truncate_to]
        self.routes[f"/v2/{repository}/blobs/{digest}"] = [(200, headers, body)]
        return digest

    def serve_manifest(self, repository, tag, manifest, media_type=OCI_MANIFEST):
        body = json.dumps(manifest).encode() if isinstance(manifest, dict) else manifest
        headers = {"Content-Type": media_type, "Docker-Content-Digest": sha256(body)}
        for reference in (tag, sha256(body)):
            self.routes[f"/v2/{repository}/manifests/{reference}"] = [(200, headers, body)]
        return sha256(body)

    def serve_image(self, repository, tag, layers, config=None, compress=True):
        """Serve an image made of raw tar ``layers``; return the manifest digest."""
        import gzip
        descriptors, diff_ids = [], []
        for layer in layers:
            blob = gzip.compress(layer, mtime=0) if compress else layer
            descriptors.append({"mediaType": OCI_LAYER_GZIP if compress else OCI_LAYER,
                                "digest": self.serve_blob(repository, blob),
                                "size": len(blob)})
            diff_ids.append(sha256(layer))
        config = config or {"architecture": "amd64", "os": "linux",
                            "config": {"Cmd": ["/bin/sh"]},
                            "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        config_blob = json.dumps(config).encode()
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG,
                               "digest": self.serve_blob(repository, config_blob),
                               "size": len(config_blob)},
                    "layers": descriptors}
        return self.serve_manifest(repository, tag, manifest)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
