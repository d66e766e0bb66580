"""Chapter 4: pulling from and pushing to registries, against real servers.

The registry is Debian's ``docker-registry`` on 127.0.0.1; the images are
built with ``umoci`` and pushed with ``skopeo``; hostile registries are a
small ``http.server`` (tests/helpers/registry.py).  Nothing here talks to
any address outside 127.0.0.0/8.
"""

import gzip
import json
import os
import pty
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import threading

import pytest

from helpers.engine import Engine
from helpers.registry import (
    DOCKER_LIST, FakeRegistry, free_port, make_certificates, RegistryServer, TokenServer, build_layout, layer_tar,
    push_index, sha256, skopeo_inspect, skopeo_push, tar_entry)

pytestmark = pytest.mark.ch4


# -- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="session")
def layout(tmp_path_factory):
    """The umoci-built test images (busybox, layered, arm64) in an OCI layout."""
    return build_layout(str(tmp_path_factory.mktemp("umoci")))


@pytest.fixture(scope="session")
def registry(tmp_path_factory, layout):
    """An anonymous docker-registry with every test image pushed to it."""
    server = RegistryServer(str(tmp_path_factory.mktemp("registry")))
    try:
        address = server.address
        skopeo_push(layout, "busybox", f"{address}/test/busybox:oci", "oci")
        skopeo_push(layout, "busybox", f"{address}/test/busybox:v2s2", "v2s2")
        skopeo_push(layout, "busybox", f"{address}/library/busybox:latest", "v2s2")
        skopeo_push(layout, "layered", f"{address}/test/layered:latest", "oci")
        skopeo_push(layout, "busybox", f"{address}/test/multi:amd64", "oci")
        skopeo_push(layout, "arm64", f"{address}/test/multi:arm64", "oci")
        push_index(address, "test/multi", "latest", [("amd64", "amd64"), ("arm64", "arm64")])
        skopeo_push(layout, "busybox", f"{address}/test/list:amd64", "v2s2")
        skopeo_push(layout, "arm64", f"{address}/test/list:arm64", "v2s2")
        push_index(address, "test/list", "latest", [("amd64", "amd64"), ("arm64", "arm64")],
                   media_type=DOCKER_LIST)
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake():
    server = FakeRegistry()
    yield server
    server.stop()


def store_files(engine):
    """What the store holds: blob and layer files, and the names in index.json.

    The empty layout a first command creates (oci-layout, an empty index)
    does not count: it holds no image.
    """
    found = set()
    for top in ("images/blobs/sha256", "layers"):
        for directory, subdirectories, files in os.walk(os.path.join(engine.root, top)):
            for name in subdirectories + files:
                found.add(os.path.relpath(os.path.join(directory, name), engine.root))
    index = os.path.join(engine.root, "images", "index.json")
    if os.path.exists(index):
        with open(index) as handle:
            found |= {f"name {entry['digest']}" for entry in json.load(handle)["manifests"]}
    return found


def image_inspect(engine, name):
    return json.loads(engine.ok("image", "inspect", name))[0]


def layer_directories(engine, name):
    """The unpacked layer directories of an image, lowest first."""
    diff_ids = image_inspect(engine, name)["RootFS"]["Layers"]
    return [os.path.join(engine.root, "layers", diff_id.split(":")[1]) for diff_id in diff_ids]


def fails(engine, *arguments, env=None):
    """Run a command that must fail the way the engine fails: one line, 125."""
    result = engine.run(*arguments, env=env)
    assert result.returncode == 125, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


# -- pulling -----------------------------------------------------------------------

def test_a_pulled_layer_blob_leaves_the_page_cache(engine, registry):
    # A layer's blob is kept for push and save, not read again soon: once
    # it is on the disk, the pull lets the kernel take back its pages
    # (image.release_cached_pages); fincore(1) counts what stays.
    filesystem = subprocess.run(["stat", "--file-system", "--format", "%T", engine.root],
                                capture_output=True, text=True, check=True).stdout.strip()
    if filesystem == "tmpfs":
        pytest.skip("the engine root is on tmpfs, whose pages are the files: none can be released")
    engine.ok("pull", f"{registry.address}/test/busybox:oci")
    blobs = os.path.join(engine.root, "images", "blobs", "sha256")
    with open(os.path.join(engine.root, "images", "index.json")) as index:
        manifest = json.load(index)["manifests"][0]["digest"].split(":")[1]
    with open(os.path.join(blobs, manifest)) as handle:
        layers = [os.path.join(blobs, layer["digest"].split(":")[1])
                  for layer in json.load(handle)["layers"]]
    assert layers
    resident = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *layers],
                              capture_output=True, text=True, check=True).stdout.split()
    assert resident == ["0"] * len(layers)


@pytest.mark.parametrize("tag", ["oci", "v2s2"])
def test_pull_by_tag_in_both_manifest_formats_and_run(engine, registry, tag):
    reference = f"{registry.address}/test/busybox:{tag}"
    output = engine.ok("pull", reference)
    assert f"Status: Downloaded newer image for {reference}" in output
    assert output.strip().splitlines()[-1] == reference
    assert reference.rsplit(":", 1)[0] in engine.ok("images")
    assert engine.ok("run", "--rm", reference, "cat", "/etc/platform") == "linux/amd64\n"


def test_pull_by_digest_checks_the_manifest_and_names_the_image(engine, registry, layout):
    remote = skopeo_inspect(f"docker://{registry.address}/test/busybox:oci")
    reference = f"{registry.address}/test/busybox@{remote['Digest']}"
    engine.ok("pull", reference)
    inspected = image_inspect(engine, reference)
    assert reference in inspected["RepoDigests"]
    listing = engine.ok("images", "--digests")
    assert remote["Digest"] in listing
    assert engine.ok("run", "--rm", reference, "echo", "by digest") == "by digest\n"


def test_pull_twice_reuses_the_layers(engine, registry):
    reference = f"{registry.address}/test/busybox:oci"
    engine.ok("pull", reference)
    before = store_files(engine)
    second = engine.ok("pull", reference)
    assert "Already exists" in second
    assert store_files(engine) == before


def test_docker_hub_names_go_to_the_mirror_from_the_environment(engine, registry):
    output = engine.ok("pull", "busybox",
                       env={"MINIDOCKER_REGISTRY_MIRRORS": f"http://{registry.address}"})
    assert "Status: Downloaded newer image for busybox:latest" in output
    assert output.strip().splitlines()[-1] == "docker.io/library/busybox:latest"
    inspected = image_inspect(engine, "busybox")
    assert "busybox:latest" in inspected["RepoTags"]
    assert engine.ok("run", "--rm", "busybox", "cat", "/etc/platform") == "linux/amd64\n"


def test_run_pulls_a_missing_image_first_and_says_so_on_stderr(engine, registry):
    # Docker's run: "Unable to find image 'busybox:latest' locally", the
    # pull, then the command, whose output alone is on stdout.
    mirror = {"MINIDOCKER_REGISTRY_MIRRORS": f"http://{registry.address}"}
    result = engine.run("run", "--rm", "busybox", "cat", "/etc/platform", env=mirror)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "linux/amd64\n"
    assert "Unable to find image 'busybox:latest' locally" in result.stderr
    assert "Status: Downloaded newer image for busybox:latest" in result.stderr
    again = engine.run("run", "--rm", "busybox", "true", env=mirror)
    assert again.returncode == 0 and again.stderr == "", again.stderr


def test_pull_never_refuses_and_pull_always_pulls_again(engine, registry):
    reference = f"{registry.address}/test/busybox:oci"
    stderr = fails(engine, "create", "--pull", "never", reference, "true")
    assert stderr.strip().splitlines() == [f"minidocker: No such image: {reference}"], stderr
    assert engine.ok("ps", "-aq") == ""
    first = engine.run("create", "--pull", "always", "--name", "first", reference, "true")
    assert first.returncode == 0, first.stderr
    assert "Unable to find image" not in first.stderr
    assert "Status: Downloaded newer image for" in first.stderr
    second = engine.run("create", "--pull", "always", "--name", "second", reference, "true")
    assert second.returncode == 0, second.stderr
    assert f"Status: Image is up to date for {reference}" in second.stderr
    # An image id names no repository: even --pull always only looks it up.
    image_id = image_inspect(engine, reference)["Id"]
    by_id = engine.run("create", "--pull", "always", "--name", "third", image_id, "true")
    assert by_id.returncode == 0 and by_id.stderr == "", by_id.stderr
    engine.ok("rm", "first", "second", "third")


def test_run_of_an_image_no_registry_has_fails_and_keeps_nothing(engine, registry):
    result = engine.run("run", "--rm", f"{registry.address}/test/nothing-here", "true")
    assert result.returncode == 125, result
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"Unable to find image '{registry.address}/test/nothing-here:latest' locally"
    assert lines[-1].startswith("minidocker: ") and "test/nothing-here" in lines[-1], lines
    assert "Traceback" not in result.stderr
    assert engine.ok("ps", "-aq") == "" and store_files(engine) == set()


def test_build_pulls_the_from_image_it_lacks(engine, registry, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        f"FROM {registry.address}/test/busybox:oci\nRUN echo built > /built\n")
    output = engine.ok("build", "-t", "on-a-pulled-base", str(tmp_path))
    assert "Unable to find image" in output and "Status: Downloaded newer image" in output
    assert engine.ok("run", "--rm", "on-a-pulled-base", "cat", "/built") == "built\n"


def test_docker_hub_names_go_to_the_mirror_from_daemon_json(engine, registry):
    os.makedirs(engine.root, exist_ok=True)
    with open(os.path.join(engine.root, "daemon.json"), "w") as handle:
        json.dump({"registry-mirrors": [f"http://{registry.address}"]}, handle)
    result = engine.run("--trace", "pull", "docker.io/library/busybox:latest")
    assert result.returncode == 0, result.stderr
    assert f"GET http://{registry.address}/v2/library/busybox/manifests/latest" in result.stderr
    assert "registry-1.docker.io" not in result.stderr


@pytest.mark.parametrize("mirror,message", [
    ("ftp://127.0.0.1:5000", "registry mirror 'ftp://127.0.0.1:5000' must start with http://"),
    ("http://", "registry mirror 'http://': invalid host name or port"),
    ("http://:5000", "registry mirror 'http://:5000': invalid host name or port"),
    ("http://a b:5000", "registry mirror 'http://a b:5000': invalid host name or port"),
    ("http://127.0.0.1:99999", "registry mirror 'http://127.0.0.1:99999': invalid host name"),
    ("http://user@127.0.0.1:5000", "invalid host name or port"),
    ("http://127.0.0.1:5000/v?x=1", "a query or fragment at the end of the URL is not allowed"),
    ("http://127.0.0.1:5000/a b", "the path may hold only printable ASCII characters"),
    ("http://127.0.0.1:5000/caf\u00e9", "the path may hold only printable ASCII characters"),
])
def test_a_bad_mirror_setting_is_one_line_and_nothing_is_contacted(engine, mirror, message):
    # Refused before any request: neither the mirror nor Docker Hub is tried.
    result = engine.run("--trace", "pull", "busybox", env={"MINIDOCKER_REGISTRY_MIRRORS": mirror})
    assert result.returncode == 125, result
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[ch")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert " GET " not in result.stderr and "CONNECT" not in result.stderr


@pytest.mark.parametrize("document,message", [
    ('["http://127.0.0.1:5000"]', "must hold a JSON object"),
    ('{"registry-mirrors": "http://127.0.0.1:5000"}', "registry-mirrors must be a list of strings"),
    ('{"insecure-registries": [5000]}', "insecure-registries must be a list of strings"),
    ('{"registry-mirrors": [', "is not valid JSON"),
    ("[" * 100000, "is not valid JSON: not JSON the engine reads: nested too deeply"),
    (None, "cannot be read: Is a directory"),
])
def test_a_bad_daemon_json_is_one_line(engine, document, message):
    os.makedirs(engine.root, exist_ok=True)
    if document is None:
        os.mkdir(os.path.join(engine.root, "daemon.json"))
    else:
        with open(os.path.join(engine.root, "daemon.json"), "w") as handle:
            handle.write(document)
    result = engine.run("pull", "busybox")
    assert result.returncode == 125, result
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("document,message", [
    (None, "cannot be read: Is a directory"),
    ('{"auths": {', "is not valid JSON"),
    ('["REGISTRY"]', 'must hold a JSON object whose "auths" maps each registry to an object'),
    ('{"auths": ["REGISTRY"]}', 'must hold a JSON object whose "auths" maps'),
    ('{"auths": {"REGISTRY": "Ym9iOmJ1aWxkZXI="}}', 'must hold a JSON object whose "auths" maps'),
    ('{"auths": {"REGISTRY": {"auth": "Ym9i!!"}}}', 'the "auth" of REGISTRY must be the base64'),
    ('{"auths": {"REGISTRY": {"auth": 5}}}', 'the "auth" of REGISTRY must be the base64'),
    ('{"auths": {"REGISTRY": {"auth": "Ym9i"}}}', 'the "auth" of REGISTRY must be the base64'),
    ('{"auths": {"REGISTRY": {"auth": "/w=="}}}', 'the "auth" of REGISTRY must be the base64'),
    ('{"auths": {"REGISTRY": {"auth": ["Ym9iOmJ1aWxkZXI="]}}}', 'the "auth" of REGISTRY must be'),
])
def test_a_bad_auth_json_is_one_line(engine, registry, document, message):
    # "Ym9i" is "bob" (no colon), "/w==" a byte that is not UTF-8.
    os.makedirs(engine.root, exist_ok=True)
    path = os.path.join(engine.root, "auth.json")
    if document is None:
        os.mkdir(path)
    else:
        with open(path, "w") as handle:
            handle.write(document.replace("REGISTRY", registry.address))
    result = engine.run("pull", f"{registry.address}/test/busybox:oci")
    assert result.returncode == 125, result
    assert result.stderr.count("\n") == 1, result.stderr
    assert message.replace("REGISTRY", registry.address) in result.stderr, result.stderr


def test_an_empty_auth_in_auth_json_means_no_credentials(engine, registry):
    # Docker reads "auth": "" as no credentials, and pulls anonymously.
    os.makedirs(engine.root, exist_ok=True)
    with open(os.path.join(engine.root, "auth.json"), "w") as handle:
        json.dump({"auths": {registry.address: {"auth": ""}}}, handle)
    engine.ok("pull", f"{registry.address}/test/busybox:oci")


def test_a_realm_with_a_query_keeps_it(engine, fake):
    fake.serve_image("team/app", "latest", [layer_tar([tar_entry("f", data=b"x")])])
    realm = f"http://{fake.address}/token?client=minidocker-test#fragment"
    fake.routes["/v2/"] = [(401, {"WWW-Authenticate": f'Bearer realm="{realm}"'}, b"")]
    fake.routes["/token"] = [(200, {"Content-Type": "application/json"}, b'{"token": "t"}')]
    engine.ok("pull", f"{fake.address}/team/app")
    token_paths = [path for _, path in fake.requests if path.startswith("/token")]
    # The realm's own query, then scope; no empty service, no fragment.
    assert token_paths and set(token_paths) == {
        "/token?client=minidocker-test&scope=repository%3Ateam%2Fapp%3Apull"}, token_paths


def test_the_trace_shows_what_a_registry_sends_escaped(engine, fake):
    realm = f"http://{fake.address}/token\x1b[2J"
    fake.routes["/v2/"] = [(401, {"WWW-Authenticate": f'Bearer realm="{realm}"'}, b"")]
    result = engine.run("--trace", "pull", f"{fake.address}/team/app")
    assert result.returncode == 125, result
    # The escape sequence from the header reaches the terminal as text, never as itself.
    assert "\x1b" not in result.stderr
    assert "token\\x1b[2J" in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[ch")]
    assert len(errors) == 1 and "control character" in errors[0], result.stderr


def test_trace_shows_every_step_of_the_handshake(engine, registry):
    result = engine.run("--trace", "pull", f"{registry.address}/test/busybox:oci")
    assert result.returncode == 0, result.stderr
    trace = result.stderr
    # Insecure: HTTPS first (a TLS hello, answered in plain text), then plain HTTP.
    steps = [f"TLS hello to {registry.address}: the answer is not TLS",
             f"GET http://{registry.address}/v2/",
             f"GET http://{registry.address}/v2/test/busybox/manifests/oci",
             f"GET http://{registry.address}/v2/test/busybox/blobs/sha256:",
             "verified sha256:", "unpack layer"]
    positions = [trace.find(step) for step in steps]
    assert -1 not in positions, trace
    assert positions == sorted(positions), trace
    assert "[ch4 image]" in trace


def test_a_tls_hello_tells_a_tls_server_from_a_plain_one(registry, tls_registry):
    # docker-registry's Go TLS answers the hand-made hello in TLS, its plain
    # HTTP server in text; a server that closes, having read the hello
    # (end of stream) or not (a reset), does not speak TLS.
    from minidocker import http_client

    server, _ = tls_registry
    assert http_client.speaks_tls(f"https://{server.address}/v2/")
    assert not http_client.speaks_tls(f"https://{registry.address}/v2/")

    def close(listener, read_first):
        connection = listener.accept()[0]
        if read_first:
            connection.recv(65536)
        connection.close()

    for read_first in (True, False):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            closer = threading.Thread(target=close, args=(listener, read_first))
            closer.start()
            address = f"127.0.0.1:{listener.getsockname()[1]}"
            assert not http_client.speaks_tls(f"https://{address}/"), read_first
            closer.join()


def test_the_tls_hello_is_one_a_server_takes(tmp_path, tls_registry):
    # Not refused with an alert, which would still read as "speaks TLS":
    # Go's TLS server answers it with its hello (a handshake record), and
    # Python's (OpenSSL) finds in it the server name it carries.
    import ssl

    from minidocker import http_client

    server, _ = tls_registry
    with socket.create_connection(("127.0.0.2", server.port)) as connection:
        connection.sendall(http_client.client_hello("127.0.0.2"))
        assert connection.recv(1) == bytes([22])
    _, certificate, key = make_certificates(str(tmp_path), "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    names = []
    context.sni_callback = lambda _, name, __: names.append(name)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(http_client.client_hello("registry.example"))
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()   # it answered, and waits for the client's next message
    assert names == ["registry.example"]
    assert outgoing.read(1) == bytes([22])


#: What a pull from a plain-HTTP registry does without (http_client.py's
#: docstring): ssl thanks to the hand-made TLS hello, the rest by reading
#: with string methods and speaking to _socket.
NOT_ON_THE_PULL_PATH = {"ssl", "re", "enum", "socket", "selectors", "contextlib"}


def test_a_pull_imports_none_of_the_modules_it_does_without(engine, registry):
    result = engine.run("pull", f"{registry.address}/test/busybox:oci",
                        env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "minidocker.registry" in imported  # the lines were read right
    assert imported & NOT_ON_THE_PULL_PATH == set()


def test_index_is_resolved_to_the_host_platform(engine, registry):
    reference = f"{registry.address}/test/multi"
    engine.ok("pull", reference)
    assert image_inspect(engine, reference)["Architecture"] == "amd64"
    assert engine.ok("run", "--rm", reference, "cat", "/etc/platform") == "linux/amd64\n"


@pytest.mark.parametrize("repository", ["test/multi", "test/list"])
def test_platform_flag_chooses_from_an_index_or_a_manifest_list(engine, registry, repository):
    reference = f"{registry.address}/{repository}:latest"
    engine.ok("pull", "--platform", "linux/arm64", reference)
    inspected = image_inspect(engine, reference)
    assert inspected["Architecture"] == "arm64"
    layer = layer_directories(engine, reference)[-1]
    with open(os.path.join(layer, "etc", "platform")) as handle:
        assert handle.read() == "linux/arm64\n"


def test_platform_missing_from_the_index_is_a_clear_error(engine, registry):
    before = store_files(engine)
    message = fails(engine, "pull", "--platform", "linux/s390x",
                    f"{registry.address}/test/multi:latest")
    assert "no matching manifest for linux/s390x" in message
    assert store_files(engine) == before


def test_whiteouts_become_overlay_whiteouts_and_hide_files(engine, registry):
    reference = f"{registry.address}/test/layered"
    engine.ok("pull", reference)
    lowest, middle, top = layer_directories(engine, reference)
    deleted = os.lstat(os.path.join(middle, "etc", "platform"))
    assert stat.S_ISCHR(deleted.st_mode) and deleted.st_rdev == 0
    assert os.getxattr(os.path.join(top, "var", "www"), "trusted.overlay.opaque") == b"y"
    assert not os.path.exists(os.path.join(top, "var", "www", ".wh..wh..opq"))
    assert os.path.exists(os.path.join(lowest, "etc", "platform"))
    listing = engine.ok("run", "--rm", reference, "ls", "/var/www")
    assert listing.split() == ["fresh.html"]
    result = engine.run("run", "--rm", reference, "cat", "/etc/platform")
    assert result.returncode != 0
    assert "No such file" in result.stderr


def test_invalid_references_are_rejected_like_docker(engine):
    for text in ("bad//name", "a:b:c", "busybox:", "a@sha256:123", "x" * 256):
        assert "invalid reference format" in fails(engine, "pull", text), text
    assert "must be lowercase" in fails(engine, "pull", "Busybox")


def test_pull_from_a_registry_that_is_not_there_is_a_clear_error(engine):
    message = fails(engine, "pull", f"127.0.0.1:{free_port()}/test/busybox")
    assert "connection refused" in message


def test_tty_progress_rewrites_one_line_per_layer(engine, registry):
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(engine.command("pull", f"{registry.address}/test/layered"),
                                   stdout=follower, stderr=subprocess.PIPE,
                                   env=engine.environment(), cwd=os.path.dirname(__file__))
        os.close(follower)
        follower = None
        output = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=60) == 0, process.stderr.read()
        process.stderr.close()
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)
    text = output.decode()
    assert "\x1b[" in text and "\x1b[2K" in text, text
    assert "Pull complete" in text


# -- HTTPS -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory, layout):
    """docker-registry over HTTPS on 127.0.0.2, which is not insecure by default."""
    ca, certificate, key = make_certificates(str(tmp_path_factory.mktemp("tls")), "127.0.0.2")
    server = RegistryServer(str(tmp_path_factory.mktemp("tls-registry")),
                            tls=(certificate, key), ip="127.0.0.2")
    try:
        skopeo_push(layout, "busybox", f"{server.address}/test/busybox:latest", "oci")
        yield server, ca
    finally:
        server.stop()


def test_https_needs_a_trusted_certificate(engine, tls_registry):
    server, ca = tls_registry
    reference = f"{server.address}/test/busybox"
    assert "CERTIFICATE_VERIFY_FAILED" in fails(engine, "pull", reference).upper()
    trusted = os.path.join(engine.root, "certs.d", server.address)
    os.makedirs(trusted)
    shutil.copy(ca, os.path.join(trusted, "ca.crt"))
    result = engine.run("--trace", "pull", reference)
    assert result.returncode == 0, result.stderr
    assert f"GET https://{server.address}/v2/test/busybox/manifests/latest" in result.stderr
    assert "GET http://" not in result.stderr


def test_insecure_registry_setting_skips_verification(engine, tls_registry):
    server, _ = tls_registry
    engine.ok("pull", f"{server.address}/test/busybox",
              env={"MINIDOCKER_INSECURE_REGISTRIES": server.address})


# -- bearer tokens, as Docker Hub does them -----------------------------------

@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, layout):
    tokens = TokenServer(str(tmp_path_factory.mktemp("tokens")), users={"alice": "wonderland"})
    server = RegistryServer(str(tmp_path_factory.mktemp("token-registry")),
                            auth=("token", tokens))
    try:
        skopeo_push(layout, "busybox", f"{server.address}/test/busybox:latest", "oci",
                    credentials="alice:wonderland")
        tokens.requests.clear()
        yield server, tokens
    finally:
        server.stop()
        tokens.stop()


def test_anonymous_bearer_token_flow(engine, token_registry):
    server, tokens = token_registry
    tokens.requests.clear()
    result = engine.run("--trace", "pull", f"{server.address}/test/busybox")
    assert result.returncode == 0, result.stderr
    assert "WWW-Authenticate: Bearer" in result.stderr
    scopes = [request["query"].get("scope") for request in tokens.requests]
    assert ["repository:test/busybox:pull"] in scopes
    assert all(request["user"] is None for request in tokens.requests)
    assert engine.ok("run", "--rm", f"{server.address}/test/busybox", "echo", "ok") == "ok\n"


def test_push_with_a_token_needs_login(engine, busybox, token_registry):
    server, tokens = token_registry
    target = f"{server.address}/test/pushed-with-token:1"
    engine.ok("tag", "busybox", target)
    assert "unauthorized" in fails(engine, "push", target)
    assert "incorrect username or password" in fails(
        engine, "login", "-u", "alice", "-p", "wrong", server.address)
    assert "Login Succeeded" in engine.ok("login", "-u", "alice", "-p", "wonderland",
                                          server.address)
    tokens.requests.clear()
    engine.ok("push", target)
    assert any(request["user"] == "alice" and
               request["query"].get("scope") == ["repository:test/pushed-with-token:pull,push"]
               for request in tokens.requests)


# -- pushing ---------------------------------------------------------------------

def test_push_then_pull_into_a_fresh_root_gives_the_same_image(engine, busybox, registry,
                                                               tmp_path):
    target = f"{registry.address}/test/pushed:1.0"
    engine.ok("tag", "busybox", target)
    output = engine.ok("push", target)
    assert f"The push refers to repository [{registry.address}/test/pushed]" in output
    local = image_inspect(engine, target)
    remote = skopeo_inspect(f"docker://{target}")
    pushed_digest = output.strip().split("digest: ")[1].split()[0]
    assert remote["Digest"] == pushed_digest
    assert remote["Layers"] == [layer["digest"] for layer in
                                json.loads(subprocess.run(
                                    ["skopeo", "inspect", "--raw", "--tls-verify=false",
                                     f"docker://{target}"], capture_output=True,
                                    check=True).stdout)["layers"]]
    fresh = Engine(str(tmp_path / "fresh-root"))
    try:
        fresh.ok("pull", target)
        again = image_inspect(fresh, target)
        assert again["Id"] == local["Id"]
        assert again["RootFS"]["Layers"] == local["RootFS"]["Layers"]
        assert f"{registry.address}/test/pushed@{pushed_digest}" in again["RepoDigests"]
        assert fresh.ok("run", "--rm", target, "echo", "round trip") == "round trip\n"
    finally:
        # Containers, and the networks whose bridges outlive them.
        fresh.run("system", "reset", "--force", timeout=120)
        shutil.rmtree(fresh.root, ignore_errors=True)
    # A second push finds every blob already there.
    assert "Layer already exists" in engine.ok("push", target)


def test_push_with_basic_auth_login_and_logout(engine, busybox, tmp_path_factory):
    server = RegistryServer(str(tmp_path_factory.mktemp("htpasswd-registry")),
                            auth=("htpasswd", "bob", "builder"))
    try:
        target = f"{server.address}/team/app:v1"
        engine.ok("tag", "busybox", target)
        assert "authentication required" in fails(engine, "push", target)
        assert "incorrect username or password" in fails(
            engine, "login", "-u", "bob", "-p", "wrong", server.address)
        assert not os.path.exists(os.path.join(engine.root, "auth.json"))
        output = engine.ok("login", "-u", "bob", "--password-stdin", server.address,
                           input="builder\n")
        assert "Login Succeeded" in output
        config = os.path.join(engine.root, "auth.json")
        assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
        assert server.address in json.load(open(config))["auths"]
        engine.ok("push", target)
        remote = skopeo_inspect(f"docker://{target}", credentials="bob:builder")
        assert remote["Digest"].startswith("sha256:")
        assert "Removing login credentials" in engine.ok("logout", server.address)
        assert server.address not in json.load(open(config))["auths"]
        assert "authentication required" in fails(engine, "pull", target)
    finally:
        server.stop()


# -- hostile registries -------------------------------------------------------------

def pull_must_fail(engine, fake, repository, expected):
    """Pull from the fake registry; it must fail cleanly and leave nothing."""
    before = store_files(engine)
    message = fails(engine, "pull", f"{fake.address}/{repository}")
    assert expected in message, message
    after = store_files(engine)
    assert after == before, after - before
    return message


def test_layer_with_dot_dot_entries_is_refused(engine, fake, tmp_path):
    victim = tmp_path / "escaped"
    depth = "../" * 12
    fake.serve_image("evil/dotdot", "latest", [layer_tar([
        tar_entry("ok.txt", data=b"fine"),
        tar_entry(f"{depth}{victim.relative_to('/')}", data=b"escaped"),
    ])])
    pull_must_fail(engine, fake, "evil/dotdot", "outside the layer")
    assert not victim.exists()


def test_layer_with_absolute_paths_is_refused(engine, fake, tmp_path):
    victim = tmp_path / "absolute"
    fake.serve_image("evil/absolute", "latest", [layer_tar([
        tar_entry(str(victim), data=b"escaped")])])
    pull_must_fail(engine, fake, "evil/absolute", "outside the layer")
    assert not victim.exists()


def test_file_written_through_a_symlink_is_refused(engine, fake, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    fake.serve_image("evil/symlink", "latest", [layer_tar([
        tar_entry("etc", tarfile.SYMTYPE, 0o777, linkname=str(outside)),
        tar_entry("etc/pwned", data=b"escaped"),
    ])])
    pull_must_fail(engine, fake, "evil/symlink", "symbolic link")
    assert list(outside.iterdir()) == []


def test_symlink_in_a_lower_layer_cannot_be_written_through(engine, fake, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    fake.serve_image("evil/symlink-layers", "latest", [
        layer_tar([tar_entry("etc", tarfile.SYMTYPE, 0o777, linkname=str(outside))]),
        layer_tar([tar_entry("etc/pwned", data=b"escaped")]),
    ])
    engine.run("pull", f"{fake.address}/evil/symlink-layers")
    # Each layer is unpacked into its own directory: the upper layer's
    # etc/pwned lands in that directory, never through the lower symlink.
    assert list(outside.iterdir()) == []


def test_hard_link_to_a_host_file_is_refused(engine, fake, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    fake.serve_image("evil/hardlink", "latest", [layer_tar([
        tar_entry("stolen", tarfile.LNKTYPE, linkname=str(secret))])])
    pull_must_fail(engine, fake, "evil/hardlink", "hard link")
    assert os.stat(secret).st_nlink == 1
    fake.serve_image("evil/hardlink-dotdot", "latest", [layer_tar([
        tar_entry("stolen", tarfile.LNKTYPE, linkname="../" * 12 + str(secret)[1:])])])
    pull_must_fail(engine, fake, "evil/hardlink-dotdot", "outside the layer")
    assert os.stat(secret).st_nlink == 1


def test_blob_with_the_wrong_digest_is_refused(engine, fake):
    layer = gzip.compress(layer_tar([tar_entry("file", data=b"real")]), mtime=0)
    evil = gzip.compress(layer_tar([tar_entry("file", data=b"evil")]), mtime=0)
    digest = fake.serve_blob("evil/digest", layer)
    fake.serve_blob("evil/digest", evil, digest=digest)      # same name, other bytes
    manifest_layers = [(digest, len(evil))]
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [sha256(layer_tar([tar_entry("file", data=b"real")]))]}}
    ).encode()
    fake.serve_manifest("evil/digest", "latest", {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": fake.serve_blob("evil/digest", config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": d, "size": s} for d, s in manifest_layers]})
    pull_must_fail(engine, fake, "evil/digest", "refusing it")


def test_truncated_blob_is_refused(engine, fake):
    digest = fake.serve_image("evil/truncated", "latest",
                              [layer_tar([tar_entry("big", data=os.urandom(200_000))])])
    manifest = json.loads(fake.routes[f"/v2/evil/truncated/manifests/{digest}"][0][2])
    layer = manifest["layers"][0]
    blob = fake.routes[f"/v2/evil/truncated/blobs/{layer['digest']}"][0][2]
    fake.serve_blob("evil/truncated", blob, truncate_to=len(blob) // 2)
    pull_must_fail(engine, fake, "evil/truncated", "truncated")


def test_manifest_naming_a_missing_blob_is_refused(engine, fake):
    digest = fake.serve_image("evil/missing", "latest", [layer_tar([tar_entry("f", data=b"x")])])
    manifest = json.loads(fake.routes[f"/v2/evil/missing/manifests/{digest}"][0][2])
    del fake.routes[f"/v2/evil/missing/blobs/{manifest['layers'][0]['digest']}"]
    pull_must_fail(engine, fake, "evil/missing", "404")


def test_manifest_with_the_wrong_digest_is_refused(engine, fake):
    digest = fake.serve_image("evil/manifest", "latest", [layer_tar([tar_entry("f", data=b"x")])])
    other = "sha256:" + "0" * 64
    fake.routes[f"/v2/evil/manifest/manifests/{other}"] = \
        fake.routes[f"/v2/evil/manifest/manifests/{digest}"]
    before = store_files(engine)
    message = fails(engine, "pull", f"{fake.address}/evil/manifest@{other}")
    assert "refusing it" in message
    assert store_files(engine) == before


def test_zstd_layers_need_compression_zstd(engine, fake):
    fake.serve_image("evil/zstd", "latest", [layer_tar([tar_entry("f", data=b"x")])])
    manifest_path = "/v2/evil/zstd/manifests/latest"
    manifest = json.loads(fake.routes[manifest_path][0][2])
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    fake.serve_manifest("evil/zstd", "latest", manifest)
    try:
        import compression.zstd  # noqa: F401
    except ImportError:
        pull_must_fail(engine, fake, "evil/zstd", "compression.zstd")
    else:
        pytest.skip("this Python has compression.zstd; the error path does not apply")


def test_transient_server_errors_are_retried(engine, fake):
    digest = fake.serve_image("flaky/image", "latest", [layer_tar([tar_entry("f", data=b"x")])])
    path = "/v2/flaky/image/manifests/latest"
    good = fake.routes[path][0]
    fake.routes[path] = [(500, {}, b"oops"), (503, {}, b"busy"), good]
    output = engine.ok("pull", f"{fake.address}/flaky/image")
    assert f"Digest: {digest}" in output
    assert [request for request in fake.requests if request[1] == path] == [("GET", path)] * 3


def test_server_errors_that_persist_are_reported(engine, fake):
    fake.routes["/v2/flaky/down/manifests/latest"] = [(500, {}, b"still broken")]
    pull_must_fail(engine, fake, "flaky/down", "500")


def test_unpacking_keeps_owners_setuid_bits_and_device_nodes(engine, fake):
    setuid = tar_entry("bin/tool", mode=0o4755, data=b"#!/bin/sh\n")
    setuid[0].uid, setuid[0].gid = 1000, 1000
    device = tar_entry("dev/null", tarfile.CHRTYPE, 0o666)
    device[0].devmajor, device[0].devminor = 1, 3
    fake.serve_image("fine/special", "latest", [layer_tar([
        tar_entry("bin/", tarfile.DIRTYPE, 0o755), setuid,
        tar_entry("dev/", tarfile.DIRTYPE, 0o755), device,
        tar_entry("bin/link", tarfile.SYMTYPE, 0o777, linkname="/etc/passwd"),
        tar_entry("bin/hard", tarfile.LNKTYPE, linkname="bin/tool"),
    ])])
    engine.ok("pull", f"{fake.address}/fine/special")
    (layer,) = layer_directories(engine, f"{fake.address}/fine/special")
    tool = os.lstat(os.path.join(layer, "bin", "tool"))
    assert stat.S_IMODE(tool.st_mode) == 0o4755 and (tool.st_uid, tool.st_gid) == (1000, 1000)
    node = os.lstat(os.path.join(layer, "dev", "null"))
    assert stat.S_ISCHR(node.st_mode) and (os.major(node.st_rdev), os.minor(node.st_rdev)) == (1, 3)
    # An absolute symlink is kept as it is: it is resolved inside the container.
    assert os.readlink(os.path.join(layer, "bin", "link")) == "/etc/passwd"
    assert os.lstat(os.path.join(layer, "bin", "hard")).st_ino == tool.st_ino


def test_docker_hub_digest_pull_through_the_mirror(engine, registry):
    remote = skopeo_inspect(f"docker://{registry.address}/library/busybox:latest")
    reference = f"busybox@{remote['Digest']}"
    engine.ok("pull", reference,
              env={"MINIDOCKER_REGISTRY_MIRRORS": f"http://{registry.address}"})
    assert f"busybox@{remote['Digest']}" in image_inspect(engine, reference)["RepoDigests"]
    assert engine.ok("run", "--rm", reference, "echo", "pinned") == "pinned\n"


# -- layers in parallel, unpacked as they arrive --------------------------------------

def test_a_wrong_digest_in_one_of_many_parallel_layers_leaves_nothing(engine, fake):
    # The layers download at the same time and unpack while they arrive; the
    # bad one is found only at its end, after others may be complete.  All of
    # them must go: no blob, no layer directory, no temporary, no name.
    layers = [layer_tar([tar_entry(f"part{number}", data=os.urandom(400_000))])
              for number in range(5)]
    digest = fake.serve_image("evil/one-of-many", "latest", layers, compress=False)
    manifest = json.loads(fake.routes[f"/v2/evil/one-of-many/manifests/{digest}"][0][2])
    path = f"/v2/evil/one-of-many/blobs/{manifest['layers'][2]['digest']}"
    status, headers, body = fake.routes[path][0]
    other = layer_tar([tar_entry("part2", data=os.urandom(400_000))])  # as long, other bytes
    assert len(other) == len(body) and other != body
    fake.routes[path] = [(status, headers, other)]
    pull_must_fail(engine, fake, "evil/one-of-many", "refusing it")
    # The same registry, fixed: the pull now completes with every layer.
    fake.routes[path] = [(status, headers, body)]
    engine.ok("pull", "-q", f"{fake.address}/evil/one-of-many")
    directories = layer_directories(engine, f"{fake.address}/evil/one-of-many")
    assert [sorted(os.listdir(directory)) for directory in directories] == \
        [[f"part{number}"] for number in range(5)]


def test_a_layer_listed_twice_is_fetched_once_and_a_dropped_one_again(engine, fake):
    shared = layer_tar([tar_entry("shared", data=b"in two places\n")])
    big = layer_tar([tar_entry("big", data=os.urandom(300_000))])
    digest = fake.serve_image("fine/twice", "latest", [shared, big, shared])
    manifest = json.loads(fake.routes[f"/v2/fine/twice/manifests/{digest}"][0][2])
    shared_path = f"/v2/fine/twice/blobs/{manifest['layers'][0]['digest']}"
    big_path = f"/v2/fine/twice/blobs/{manifest['layers'][1]['digest']}"
    status, headers, body = fake.routes[big_path][0]
    # The first answer promises the whole blob and hangs up half way, while
    # the other layer is being fetched beside it.
    fake.routes[big_path] = [(status, headers, body[:len(body) // 2]), (status, headers, body)]
    engine.ok("pull", "-q", f"{fake.address}/fine/twice")
    assert [request for request in fake.requests if request[1] == shared_path] == \
        [("GET", shared_path)]
    assert [request for request in fake.requests if request[1] == big_path] == \
        [("GET", big_path)] * 2
    lowest, middle, top = layer_directories(engine, f"{fake.address}/fine/twice")
    assert lowest == top and os.listdir(middle) == ["big"]
    blobs = os.listdir(os.path.join(engine.root, "images", "blobs", "sha256"))
    assert not [name for name in blobs if name.startswith(".")]
    with open(os.path.join(lowest, "shared")) as handle:
        assert handle.read() == "in two places\n"



# -- the HTTP client: proxies ---------------------------------------------------------

class LoopbackServer:
    """A TCP server on 127.0.0.1 that serves each connection in a thread of its own.

    Subclasses say how, in ``serve(connection)``.
    """

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # stop() closed the listener
            threading.Thread(target=self.serve, args=(connection,), daemon=True).start()

    def stop(self):
        # close(2) alone does not wake a thread blocked in accept(2) on the
        # same socket; shutdown(2) does, and the thread ends before the next
        # test (a thread left behind makes pty.fork warn in later tests).
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.acceptor.join(timeout=10)


class RelayProxy(LoopbackServer):
    """An HTTP proxy on 127.0.0.1 that relays to loopback addresses and nowhere else.

    It records the first line of every request it gets: ``CONNECT
    host:port HTTP/1.1`` (a tunnel, for https) or ``GET http://host:port/...
    HTTP/1.1`` (the absolute form, for http).  A target in 127.0.0.0/8 is
    relayed byte for byte; any other gets ``403 Forbidden``, so nothing a
    test sends through it leaves the machine.
    """

    def __init__(self):
        self.lines = []
        super().__init__()
        self.url = f"http://{self.address}"

    def serve(self, client):
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            first = head.split(b"\r\n")[0].decode()
            self.lines.append(first)
            method, target, _ = first.split(" ")
            authority = target if method == "CONNECT" else target.split("/")[2]
            hostname, _, port = authority.rpartition(":")
            if not hostname.startswith("127."):
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection((hostname, int(port)), timeout=30) as upstream:
                if method == "CONNECT":
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    upstream.sendall(head)  # a server must accept the absolute form too
                back = threading.Thread(target=self._pump, args=(upstream, client))
                back.start()
                self._pump(client, upstream)
                back.join()

    @staticmethod
    def _pump(source, destination):
        try:
            while data := source.recv(65536):
                destination.sendall(data)
            destination.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # one side hung up hard; the other sees it on its own socket


@pytest.fixture
def relay():
    proxy = RelayProxy()
    yield proxy
    proxy.stop()


def through(proxy, no_proxy=None):
    """The environment that sends a command's requests to ``proxy``."""
    environment = {name: proxy.url for name in
                   ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    if no_proxy is not None:
        environment["no_proxy"] = no_proxy
    return environment


def test_a_docker_hub_pull_goes_to_the_proxy_and_no_further(engine, relay):
    # The network guard of conftest.py, proven: a Docker Hub name (and a
    # mirror that is not on loopback) goes to the proxy the environment
    # names, https as a CONNECT tunnel, http in absolute form.  This proxy
    # refuses both, so nothing leaves the machine, not even a DNS query.
    environment = through(relay)
    environment["MINIDOCKER_REGISTRY_MIRRORS"] = "http://mirror.example:5000"
    message = fails(engine, "pull", "busybox", env=environment)
    assert relay.lines == ["GET http://mirror.example:5000/v2/ HTTP/1.1",
                           "CONNECT registry-1.docker.io:443 HTTP/1.1"], relay.lines
    assert len(message.strip().splitlines()) == 1, message
    assert "registry-1.docker.io" in message and "403 Forbidden" in message, message


def test_a_proxy_that_is_not_there_is_a_clear_error(engine):
    # conftest.py's proxy: a closed port.
    message = fails(engine, "pull", "busybox")
    assert message.strip() == ("minidocker: cannot reach the registry at registry-1.docker.io: "
                               "connection refused (the proxy 127.0.0.1:9)"), message


def test_pulls_through_a_proxy_tunnel_and_in_absolute_form(engine, relay, registry,
                                                          tls_registry):
    # An empty no_proxy wins over NO_PROXY (lower case first, as urllib),
    # so even loopback registries are reached through the proxy here.
    server, ca = tls_registry
    trusted = os.path.join(engine.root, "certs.d", server.address)
    os.makedirs(trusted)
    shutil.copy(ca, os.path.join(trusted, "ca.crt"))
    environment = through(relay, no_proxy="")
    engine.ok("pull", f"{server.address}/test/busybox", env=environment)
    assert f"CONNECT {server.address} HTTP/1.1" in relay.lines, relay.lines
    # An insecure registry: HTTPS first (the tunnel reaches a plain HTTP
    # server, so TLS fails), then plain HTTP in absolute form.
    relay.lines.clear()
    engine.ok("pull", f"{registry.address}/test/busybox:oci", env=environment)
    assert relay.lines[:2] == [f"CONNECT {registry.address} HTTP/1.1",
                               f"GET http://{registry.address}/v2/ HTTP/1.1"], relay.lines
    assert f"GET http://{registry.address}/v2/test/busybox/manifests/oci HTTP/1.1" \
        in relay.lines, relay.lines
    assert engine.ok("run", "--rm", f"{registry.address}/test/busybox:oci",
                     "cat", "/etc/platform") == "linux/amd64\n"


def test_no_proxy_entries_bypass_the_proxy(engine, relay, registry):
    # conftest.py's NO_PROXY lists the loopback addresses; a host:port entry
    # works too.
    for no_proxy in (None, registry.address):
        engine.ok("pull", f"{registry.address}/test/busybox:oci", env=through(relay, no_proxy))
    assert relay.lines == []


def test_proxy_settings_are_read_as_urllib_reads_them(monkeypatch):
    from minidocker import host, http_client

    for name in ("http_proxy", "https_proxy", "no_proxy",
                 "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert http_client.proxy_for("https", "example.com", 443) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://nobody@127.0.0.1:1")
    monkeypatch.setenv("https_proxy", "http://user:p%40ss@127.0.0.1:3128/")
    monkeypatch.setenv("HTTP_PROXY", "127.0.0.1:8080")
    proxy = http_client.proxy_for("https", "example.com", 443)
    assert (proxy.host, proxy.port) == ("127.0.0.1", 3128)
    assert proxy.authorization == http_client.basic_header(("user", "p@ss"))
    proxy = http_client.proxy_for("http", "example.com", 80)
    assert (proxy.host, proxy.port, proxy.authorization) == ("127.0.0.1", 8080, None)

    def proxied(hostname, port=443, no_proxy=""):
        monkeypatch.setenv("no_proxy", no_proxy)
        return http_client.proxy_for("https", hostname, port) is not None

    assert proxied("example.com")
    assert not proxied("example.com", no_proxy="*")
    for entry in ("example.com", ".example.com", "other.org, example.com"):
        assert not proxied("example.com", no_proxy=entry), entry
        assert not proxied("registry.example.com", no_proxy=entry), entry
        assert proxied("badexample.com", no_proxy=entry), entry
    assert not proxied("example.com", 5000, no_proxy="example.com:5000")
    assert proxied("example.com", 443, no_proxy="example.com:5000")
    assert not proxied("::1", 5000, no_proxy="::1")
    assert not proxied("::1", 5000, no_proxy="[::1]:5000")
    monkeypatch.setenv("NO_PROXY", "example.com")
    assert proxied("example.com", no_proxy="")           # lower case first, even empty
    monkeypatch.delenv("no_proxy")
    assert http_client.proxy_for("https", "example.com", 443) is None
    monkeypatch.setenv("https_proxy", "https://127.0.0.1:3128")
    with pytest.raises(host.EngineError, match="plain http:// only"):
        http_client.proxy_for("https", "elsewhere.org", 443)


# -- the HTTP client: what a server may send ------------------------------------------

class CannedServer(LoopbackServer):
    """A TCP server on 127.0.0.1 that answers every request with the same bytes.

    It records each request it reads (the head, and the body its
    Content-Length promises).  A TLS handshake gets the plain-text answer a
    web server gives it, so a client that tries HTTPS first moves on to
    HTTP.  With ``hold``, the connection stays open after the answer: a
    client that waits for more must be stopped by its own limits.
    """

    def __init__(self, answer, hold=False):
        self.answer, self.hold = answer, hold
        self.requests = []
        super().__init__()

    def serve(self, connection):
        with connection:
            received = connection.recv(65536)
            answer = self.answer
            if received.startswith(b"\x16"):  # a TLS ClientHello
                answer = b"HTTP/1.1 400 Bad Request\r\n\r\n"
            else:
                while b"\r\n\r\n" not in received and (data := connection.recv(65536)):
                    received += data
                head, _, body = received.partition(b"\r\n\r\n")
                length = int(dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
                             .get("Content-Length", 0))
                while len(body) < length and (data := connection.recv(65536)):
                    body += data
                self.requests.append((head.decode(), body))
            try:
                connection.sendall(answer)
                if not self.hold:
                    connection.shutdown(socket.SHUT_WR)
                while connection.recv(65536):
                    pass  # until the client hangs up
            except OSError:
                # A client may hang up before the whole answer is sent (a
                # reset), or have gone already (shutdown(2) says ENOTCONN):
                # what it got is for the test to check, on its side.
                pass


def canned(answer, method="GET", headers=None, body=None, hold=False):
    """Send one request to a :class:`CannedServer` answering ``answer``; return the response."""
    from minidocker import http_client

    server = CannedServer(answer, hold=hold)
    try:
        return http_client.send(method, f"http://{server.address}/v2/", headers or {}, body,
                                tls_context=None)
    finally:
        server.stop()


@pytest.mark.parametrize("answer, hold, expected", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", True, "does not answer in HTTP/1.1"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", False, "invalid header line"),
    (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", False, "invalid header line"),
    (b"HTTP/1.1 200 OK\r\n X: before the first field\r\n\r\n", False, "invalid header line"),
    (b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n", False, "invalid header line"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, True, "more than 65536 bytes"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", True, "100 lines of headers"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", False,
     "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", False, "invalid Content-Length"),
    # int() refuses more than 4,300 digits with a ValueError (it was a traceback).
    (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", False,
     "invalid Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", False, "transfer coding"),
])
def test_a_head_that_is_not_http_is_refused_at_once(answer, hold, expected):
    from minidocker import http_client

    with pytest.raises(http_client.ProtocolError, match=expected):
        canned(answer, hold=hold)


@pytest.mark.parametrize("answer, error, expected", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "ProtocolError",
     "invalid chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
     "ProtocolError", "does not end where its size says"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "IncompleteBody",
     "closed the connection"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", "IncompleteBody",
     "closed the connection before the end of the body"),
])
def test_a_body_that_breaks_its_framing_is_refused(answer, error, expected):
    from minidocker import http_client

    response = canned(answer, hold=error == "ProtocolError")
    with pytest.raises(getattr(http_client, error), match=expected):
        response.read()


def test_bodies_end_where_rfc_9112_says():
    # Chunks with an extension and a trailer, read across chunk boundaries.
    response = canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
                      b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n",
                      hold=True)
    assert (response.read(8), response.read(), response.read()) == (b"hello, w", b"orld", b"")
    # Interim 1xx answers are skipped; names are found in any case; a folded
    # line joins the one before; readinto fills a buffer the caller keeps.
    response = canned(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 11\r\nX-Folded: one\r\n two\r\n\r\n"
                      b"hello world", hold=True)
    assert (response.status, response.reason) == (200, "OK")
    assert response.headers.get("X-FOLDED") == "one two"
    buffer = bytearray(8)
    assert response.readinto(buffer) == 8 and buffer == b"hello wo"
    assert response.readinto(buffer) == 3 and buffer[:3] == b"rld"
    assert response.readinto(buffer) == 0
    # No length and no chunks: the body ends when the server closes.
    assert canned(b"HTTP/1.0 200 OK\r\n\r\nuntil the end").read() == b"until the end"
    # No body after HEAD, 204 or 304, whatever Content-Length says.
    for method, status in (("HEAD", b"200 OK"), ("GET", b"204 No Content"),
                           ("GET", b"304 Not Modified")):
        response = canned(b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\n", method,
                          hold=True)
        assert response.read() == b"", (method, status)


def test_a_body_read_whole_has_a_limit():
    # A token or an error is read whole; a server that sends without end
    # (here 5 MiB with no length, then it closes) is stopped at 4 MiB.
    from minidocker import http_client

    response = canned(b"HTTP/1.1 401 Unauthorized\r\n\r\n" + b"x" * (5 << 20))
    with pytest.raises(http_client.ProtocolError, match="larger than 4194304 bytes"):
        response.read()


def test_redirects_drop_the_authorization_header():
    from minidocker import http_client

    storage = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nblob")
    try:
        for status, method, then in (("302 Found", "GET", "GET"), ("307 Temporary Redirect",
                                     "PUT", "PUT"), ("303 See Other", "PUT", "GET"),
                                     ("302 Found", "POST", "GET")):
            answer = (f"HTTP/1.1 {status}\r\nLocation: http://{storage.address}/blob?sig=1\r\n"
                      "Content-Length: 0\r\n\r\n").encode()
            registry_server = CannedServer(answer)
            try:
                response = http_client.send(
                    method, f"http://{registry_server.address}/v2/x/blobs/sha256:0",
                    {"Authorization": "Bearer secret", "Content-Type": "text/plain"},
                    b"data" if method != "GET" else None, tls_context=None)
                assert response.read() == b"blob"
            finally:
                registry_server.stop()
            (first, _), = registry_server.requests
            head, body = storage.requests.pop()
            assert "Authorization: Bearer secret" in first
            assert head.startswith(f"{then} /blob?sig=1 HTTP/1.1\r\n"), head
            assert "Authorization" not in head, head
            assert ("Content-Type" in head) == (then == method), head
            assert body == (b"data" if then != "GET" else b""), (status, method, body)
    finally:
        storage.stop()


def test_line_breaks_in_what_we_send_are_refused_before_sending():
    from minidocker import host, http_client

    server = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    try:
        for path, headers in (("/v2/", {"X-Token": "a\r\nInjected: yes"}),
                              ("/v2/ HTTP/1.1\r\nInjected: yes\r\nX:", {})):
            with pytest.raises(host.EngineError, match="control character"):
                http_client.send("GET", f"http://{server.address}{path}", headers, None, None)
        assert server.requests == []
    finally:
        server.stop()


def test_a_server_that_says_nothing_times_out(monkeypatch):
    from minidocker import http_client

    monkeypatch.setattr(http_client, "TIMEOUT", 0.5)
    with pytest.raises(TimeoutError):
        canned(b"", hold=True)


def test_a_registry_that_does_not_speak_http_is_a_one_line_error(engine):
    server = CannedServer(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")
    try:
        message = fails(engine, "pull", f"{server.address}/test/busybox")
    finally:
        server.stop()
    assert message.strip() == (f"minidocker: cannot reach the registry at {server.address}: "
                               f"{server.address} sent an invalid header line: 'no colon here'")


# -- the HTTP client's parsing, against the regular expressions it replaced ------

# http_client reads status lines, header names, ports and URLs with string
# methods (the re module is not worth its import on a pull).  These were its
# regular expressions; each function must read every text as its expression did.
def _regex_status_line(line):
    match = re.fullmatch(r"HTTP/1\.[0-9] ([1-9][0-9][0-9])(?: (.*))?", line)
    return match and (int(match[1]), match[2] or "")


def _regex_split_url(url):
    match = re.match(r"(?i)(https?)://([^/?#]*)([^#]*)", url)
    if not match:
        return None
    scheme = match[1].lower()
    authority = _regex_split_authority(match[2], {"http": 80, "https": 443}[scheme])
    return authority and (scheme, *authority, "/" + match[3].removeprefix("/"))


def _regex_split_authority(authority, default_port=None):
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::([0-9]{1,5}))?",
                         authority)
    if not match or (match[3] and not 0 < int(match[3]) < 65536):
        return None
    return (match[1] or match[2]).lower(), int(match[3]) if match[3] else default_port


def _regex_resolve_url(base, location):
    scheme, _, rest = base.partition("://")
    authority, path = re.match(r"([^/?#]*)([^?#]*)", rest).groups()
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", location):
        return location
    # RFC 3986 §5.2.2, in the order the old code tried them ("//" before "/").
    heads = {"//": f"{scheme}:", "/": f"{scheme}://{authority}",
             "?": f"{scheme}://{authority}{path}"}
    head = next((heads[start] for start in heads if location.startswith(start)), None)
    return head + location if head else \
        f"{scheme}://{authority}{path.rpartition('/')[0]}/{location}"


def _either(function, *arguments):
    from minidocker import host

    try:
        return function(*arguments)
    except host.EngineError:
        return None


@pytest.mark.ch4
def test_the_http_client_reads_every_text_as_its_regular_expressions_did():
    import random

    from minidocker import http_client, registry

    generator = random.Random(4)

    def texts(alphabet, fixed, count=20000, longest=14):
        return fixed + ["".join(generator.choice(alphabet)
                                for _ in range(generator.randint(0, longest)))
                        for _ in range(count)]

    def compare(name, ours, theirs, cases):
        wrong = [(case, ours(*case), theirs(*case)) for case in cases
                 if ours(*case) != theirs(*case)]
        assert wrong == [], (name, wrong[:5])
        assert sum(theirs(*case) not in (None, False) for case in cases) > 200, name

    compare("status line", lambda line: http_client.parse_status_line(line) or None,
            lambda line: _regex_status_line(line) or None,
            [(line,) for line in texts("HTP/1.0 29\tOKé", ["HTTP/1.1 200 OK", "HTTP/1.0 404",
                                                           "HTTP/1.1 200 ", "HTTP/2 200 OK",
                                                           "HTTP/1.1 099 x", "HTTP/1.1 020"])]
            + [(f"HTTP/1.{generator.choice('019x')} "
                f"{generator.randint(0, 1200):0{generator.randint(1, 4)}d}"
                f"{generator.choice(['', ' ', ' OK', '  x', chr(9) + 'OK'])}",)
               for _ in range(5000)])
    compare("header name", lambda name: http_client.only(name, http_client.TOKEN),
            lambda name: bool(re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name)),
            [(name,) for name in texts("aZ9-_!:(é \t\"~`^", ["Content-Type", "X-Y", ""])])
    compare("visible", lambda text: http_client.only(text, " " + http_client.VISIBLE),
            lambda text: bool(re.fullmatch(r"[ -~]+", text)),
            [(text,) for text in texts("a ~\x7f\x1f\r\n\té!", [""])])
    compare("authority", lambda text: _either(http_client.split_authority, text),
            _regex_split_authority,
            [(text,) for text in texts("aZ0.9_-:[]f%é", ["[::1]:5000", "host:65535", "h:65536",
                                                        "h:0", "h:00080", "[::1]", "h:"])])
    # ASCII: the old expression's (?i) also took "httpſ" (U+017F) for https.
    compare("url", lambda url: _either(http_client.split_url, url), _regex_split_url,
            [(generator.choice(["http://", "HTTPS://", "hTtp://", "https:/", "ftp://", "h"])
              + tail,) for tail in texts("h:/?#a1[]5", ["h/x", "h:5000/v2/?q#f", "", "h"])])
    compare("resolve", http_client.resolve_url, _regex_resolve_url,
            [(base, location) for base, location in zip(
                texts("h:/?#a.b", ["http://h/a/b?q"], longest=16),
                texts("a1+.-:/?#h", ["/x", "//h/x", "?q", "x", "http://h/", "a+b:c", "1a:b"]))])
    compare("percent-decode", http_client.percent_decode,
            lambda text: re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes.fromhex(m[1].decode()),
                                text.encode()).decode(errors="replace"),
            [(text,) for text in texts("%4a1fGé ", ["%41", "%%41", "%4%41", "%e2%82%ac", "%"])])
    compare("percent-encode", http_client.percent_encode,
            lambda text: re.sub(r"[^A-Za-z0-9._~-]",
                                lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), text),
            [(text,) for text in texts("aZ9._~-/ :é€%", ["sha256:ab", "repository:a/b:pull"])])
    compare("challenge", registry.quoted_parameters,
            lambda text: re.findall(r'(\w+)="([^"]*)"', text),
            [(text,) for text in texts('ab_é٣="=, ', ['realm="x",service="y"', '="a b="c"',
                                                       'x="a=" y="b"', 'a="x'])])
