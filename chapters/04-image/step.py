"""Chapter 4, try it: pull an image over the distribution API and look at its layers.

Run as root from the repository's top directory::

    python chapters/04-image/step.py           # what the registry saw, what the layers hold
    python chapters/04-image/step.py --trace   # and the client's side of every request

The step uses only chapter 4's modules (``minidocker.image`` and
``minidocker.registry``) and the host door.  It makes a three-layer image by
hand (the second layer deletes a file, the third replaces a directory), serves
it from a small registry on 127.0.0.1 that asks for a bearer token the way
Docker Hub does, pulls it into a temporary engine root, and shows the
unpacked layers and the file system they add up to.
"""

import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import host, image, registry  # noqa: E402  (after the path line above)

REPOSITORY = "course/layers"
TOKEN = "a-token-for-the-course"


def layer(*entries):
    """A layer is a tar of what changed: ``(name, content or None for a directory)``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_image():
    """Return the blobs by digest and the manifest of a three-layer image."""
    layers = [
        layer(("etc/", None), ("etc/motd", b"welcome\n"), ("var/", None), ("var/www/", None),
              ("var/www/index.html", b"old site\n"), ("var/www/old.html", b"old page\n")),
        layer(("etc/.wh.motd", b"")),                               # delete /etc/motd
        layer(("var/www/", None), ("var/www/.wh..wh..opq", b""),    # replace /var/www
              ("var/www/index.html", b"new site\n")),
    ]
    compressed = [gzip.compress(data, mtime=0) for data in layers]
    config = json.dumps({
        "architecture": image.host_architecture(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(data) for data in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": registry.OCI_MANIFEST,
        "config": {"mediaType": image.MEDIA_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": image.MEDIA_LAYER_GZIP, "digest": digest(blob),
                    "size": len(blob)} for blob in compressed],
    }).encode()
    blobs = {digest(blob): blob for blob in [config, *compressed]}
    return blobs, manifest


class CourseRegistry(http.server.BaseHTTPRequestHandler):
    """Just enough of a registry: /v2/, a token endpoint, one manifest, its blobs."""

    blobs, manifest, seen = {}, b"", []

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/token":
            return self.answer(200, json.dumps({"token": TOKEN}).encode(), "application/json")
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
            scope = f',scope="repository:{REPOSITORY}:pull"' if path != "/v2/" else ""
            return self.answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', "application/json",
                               {"WWW-Authenticate": f'Bearer realm="{realm}",'
                                                    f'service="course"{scope}'})
        if path == "/v2/":
            return self.answer(200, b"{}", "application/json")
        if path in (f"/v2/{REPOSITORY}/manifests/latest",
                    f"/v2/{REPOSITORY}/manifests/{digest(self.manifest)}"):
            return self.answer(200, self.manifest, registry.OCI_MANIFEST,
                               {"Docker-Content-Digest": digest(self.manifest)})
        name = path.rsplit("/", 1)[-1]
        if path.startswith(f"/v2/{REPOSITORY}/blobs/") and name in self.blobs:
            return self.answer(200, self.blobs[name], "application/octet-stream")
        self.answer(404, b'{"errors":[{"code":"NOT_FOUND"}]}', "application/json")

    def answer(self, status, body, content_type, headers=None):
        shown = self.path if not self.path.startswith("/token") else \
            "/token?" + self.path.split("?")[1].replace("%3A", ":").replace("%2F", "/")
        self.seen.append(f"{self.command} {shown[:60]}{'...' if len(shown) > 60 else ''}"
                         f" -> {status}")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *arguments):
        pass


def describe_layer(directory):
    """One line per entry of an unpacked layer, whiteouts and opaque dirs named."""
    lines = []
    for current, directories, files in sorted(os.walk(directory)):
        for name in sorted(directories + files):
            path = os.path.join(current, name)
            relative = os.path.relpath(path, directory)
            status = os.lstat(path)
            if os.path.isdir(path):
                opaque = image._is_opaque(path)
                lines.append(f"{relative}/" + ("  (opaque: trusted.overlay.opaque=y)"
                                               if opaque else ""))
            elif os.major(status.st_rdev) == 0 and not os.path.isfile(path):
                lines.append(f"{relative}  (whiteout: character device 0/0)")
            else:
                lines.append(relative)
    return sorted(lines)


def main():
    if "--trace" in sys.argv:
        host.enable_trace()
    blobs, manifest = make_image()
    CourseRegistry.blobs, CourseRegistry.manifest = blobs, manifest
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CourseRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = tempfile.mkdtemp(prefix="minidocker-chapter4-")
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        store = image.Store(root)
        pulled = registry.pull(f"{address}/{REPOSITORY}", store=store)
        print("1. what the registry saw (the pull handshake)")
        for line in CourseRegistry.seen:
            print("   " + line.replace(address, "REGISTRY"))
        print(f"2. the image: manifest {pulled.digest[:19]}..., "
              f"{len(pulled.manifest['layers'])} layers")
        for number, directory in enumerate(pulled.layer_directories(), 1):
            print(f"   layer {number}: " + ", ".join(describe_layer(directory)))
        merged = os.path.join(root, "merged.tar")
        image.export(pulled.layer_directories(), merged)
        with tarfile.open(merged) as archive:
            print("3. what a container sees: " + ", ".join(sorted(archive.getnames())))
            print("   /var/www/index.html says: " +
                  archive.extractfile("var/www/index.html").read().decode().strip())
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
