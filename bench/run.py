"""Measure minidocker beside runc, crun and podman, side by side, in one run.

Run it as root with ``sudo make bench`` (or ``sudo bash bench/run.sh``,
which installs the peers first).  Each scenario runs every peer the same
way: a few untimed warm-up rounds, then timed rounds, each timed round one
``subprocess.run`` of the peer's command with its output sent to
``/dev/null``.  Work a round needs but that is not being measured (removing
the image a pull will fetch again, filling the container a commit will
save) happens before or after the clock, never inside it.

The scenarios (issue 9):

1. ``start``: start-to-exit of ``true`` with no network, beside runc, crun,
   podman, the kernel floor (``unshare ... chroot ROOTFS /bin/true``) and
   Python's own start-up (``python3.12 -c pass``).
2. ``start-network``: the same with each engine's default network.
3. ``output``: a container writing 100 MB to standard output, until
   ``run`` returns; then ``logs`` reading it back.
4. ``pull``: a five-layer image from a local ``docker-registry`` on
   127.0.0.1, beside ``skopeo copy`` and ``podman pull``.
5. ``commit``: a container with 200 MB of changes in 2,000 files.
6. ``detached``: 50 detached containers: the wall time to start them all,
   the memory (PSS) of the host processes each keeps alive above its PID 1
   (minidocker's monitor, podman's conmon), and ``ps`` with 50 running.

A peer that is not installed, or a minidocker command that does not exist
yet, is a row that says so: nothing is dropped silently.  Results go to
``bench/results/results.md`` and ``results.json``.

The whole run happens in a private mount namespace (the script re-executes
itself under ``unshare --mount``): every mount any engine makes there dies
with the run, the runtimes' state directories under ``/run`` are fresh
tmpfs mounts, and the empty cgroup2 tree of a hybrid host is hidden, which
crun needs to run there (it treats a mounted cgroup2 tree as the one to
use).  Traffic goes only to 127.0.0.1 and to the namespaces the engines
make here.
"""

import argparse
import glob
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from helpers.images import make_busybox_tarball  # noqa: E402  (the tests' own image recipe)

SCENARIOS = ("start", "start-network", "output", "pull", "commit", "detached")
PRIVATE_MARK = "MINIDOCKER_BENCH_PRIVATE"
# Directories where runtimes keep state for root; each gets a fresh tmpfs.
RUNTIME_STATE = ("/run/containers", "/run/libpod", "/run/runc", "/run/crun", "/var/lib/containers")
OUTPUT_BYTES = 100 * 1000 * 1000
COMMIT_FILES, COMMIT_FILE_BYTES = 2000, 100 * 1000
DETACHED_COUNT = 50
LINE = "0123456789" * 9 + "0123456"   # 97 characters, 98 bytes with the newline

# Rounds (timed, warm-up) per scenario at --scale 1.
ROUNDS = {"start": (20, 3), "start-network": (10, 2), "output": (3, 1),
          "pull": (11, 1), "commit": (3, 1), "detached": (1, 0)}

# What the issue asks for: (scenario, what, minidocker row, peer row, largest ratio).
TARGETS = [
    ("start", "start, no network", "minidocker", "runc", 2.0),
    ("start", "start, no network", "minidocker", "podman", 0.25),
    ("start-network", "start, default network", "minidocker", "podman", 0.5),
    ("output", "100 MB output, run", "minidocker run", "podman run", 1.0),
    ("output", "100 MB output, logs", "minidocker logs", "podman logs", 1.0),
    ("pull", "pull, five layers", "minidocker pull", "skopeo copy", 1.5),
    ("commit", "commit, 200 MB in 2,000 files", "minidocker commit", "podman commit", 1.5),
    ("detached", "50 detached starts", "minidocker run -d x50", "podman run -d x50", 0.5),
]
MONITOR_TARGET_BYTES = 10 * 1000 * 1000


class NotAvailable(Exception):
    """A peer or a command this machine (or this minidocker) does not have."""


class Failed(Exception):
    """A command under measurement exited with an error."""


# -- the measurement -------------------------------------------------------------

class Row:
    """One peer in one scenario: its timed rounds, or why there are none."""

    def __init__(self, name, seconds=(), note="", unit="s", values=None, kind=""):
        self.name = name
        self.kind = kind    # rows of one kind compare with minidocker's row of that kind
        self.seconds = list(seconds)
        self.note = note
        self.unit = unit
        self.values = values

    def median(self):
        return statistics.median(self.seconds) if self.seconds else None

    def as_dict(self):
        return {"name": self.name, "kind": self.kind, "seconds": self.seconds,
                "note": self.note, "unit": self.unit, "values": self.values}


def time_rounds(run_once, rounds, warmup, prepare=None, clean=None):
    """Call ``run_once(prepared)`` warmup + rounds times; return the timed seconds.

    ``prepare(index)`` runs before the clock starts and its result is passed
    to ``run_once`` and ``clean``; ``clean`` runs after the clock stops.
    """
    seconds = []
    for index in range(warmup + rounds):
        prepared = prepare(index) if prepare else None
        started = time.perf_counter()
        try:
            run_once(prepared)
        finally:
            elapsed = time.perf_counter() - started
            if clean:
                clean(prepared)
        if index >= warmup:
            seconds.append(elapsed)
    return seconds


def measure(name, run_once, rounds, warmup, prepare=None, clean=None, note=""):
    """Measure one peer; a peer that is missing or fails becomes a row saying so."""
    try:
        return Row(name, time_rounds(run_once, rounds, warmup, prepare, clean), note)
    except NotAvailable as reason:
        return Row(name, note=f"not available: {reason}")
    except Failed as reason:
        return Row(name, note=f"failed: {reason}")


def measure_in_turns(peers, rounds, warmup):
    """Measure several peers in turns, one round of each, and return their rows.

    This machine's speed drifts from minute to minute (other VMs on the
    host); timing every round of one peer before the next one starts would
    charge the drift to whichever peer ran in the slow minute, and the
    ratios would swing with it.  In turns, each minute is shared by all.
    The order of the turns reverses every round, so that no peer always
    runs right after the same other one: what a peer leaves behind (dirty
    pages, memory it just freed, which is cheaper to take again than new
    memory on the reference VM) does not always fall on the same peer.
    (Of two peers, each follows the other in every other round.)
    ``peers`` holds ``(name, run_once, note)`` triples, or ready rows for
    peers that are not here.  A fourth item, ``prepare(index)``, runs off
    the clock before each round, and what it returns is passed to
    ``run_once``.
    """
    timed = {peer[0]: [] for peer in peers if not isinstance(peer, Row)}
    failures = {}
    for index in range(warmup + rounds):
        for peer in peers if index % 2 == 0 else peers[::-1]:
            if isinstance(peer, Row) or peer[0] in failures:
                continue
            name, run_once, _, *prepare = peer
            prepared = prepare[0](index) if prepare else None
            started = time.perf_counter()
            try:
                run_once(prepared)
            except NotAvailable as reason:
                failures[name] = f"not available: {reason}"
                continue
            except Failed as reason:
                failures[name] = f"failed: {reason}"
                continue
            if index >= warmup:
                timed[name].append(time.perf_counter() - started)
    return [peer if isinstance(peer, Row) else
            Row(peer[0], note=failures[peer[0]]) if peer[0] in failures else
            Row(peer[0], timed[peer[0]], peer[2]) for peer in peers]


def command(argv, environment=None, stdout=subprocess.DEVNULL, timeout=600):
    """Run one command to completion; raise Failed with its last words if it fails."""
    try:
        result = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, env=environment,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"{' '.join(argv[:4])}... still running after {timeout} s") from None
    if result.returncode != 0:
        words = result.stderr.decode(errors="replace").strip().splitlines()
        raise Failed(f"{' '.join(argv[:4])}... exited {result.returncode}: "
                     f"{words[-1] if words else 'no message'}")
    return result


def installed(tool):
    """Return the tool's path, or raise NotAvailable."""
    path = shutil.which(tool)
    if not path:
        raise NotAvailable(f"{tool} is not installed")
    return path


# -- the peers --------------------------------------------------------------------

class Minidocker:
    """This repository's engine, driven through its command line like a user does."""

    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def argv(self, *arguments):
        return [sys.executable, "-m", "minidocker", *arguments]

    def environment(self, root=None):
        environment = dict(os.environ, MINIDOCKER_ROOT=root or self.root)
        environment.pop("MINIDOCKER_TRACE", None)
        return environment

    def __call__(self, *arguments, root=None, stdout=subprocess.DEVNULL):
        return command(self.argv(*arguments), self.environment(root), stdout=stdout)

    def has(self, name):
        """Raise NotAvailable unless ``minidocker NAME --help`` works."""
        result = subprocess.run(self.argv(name, "--help"), capture_output=True,
                                env=self.environment())
        if result.returncode != 0:
            raise NotAvailable(f"`minidocker {name}` does not exist yet")

    def inspect(self, name):
        output = self("inspect", name, stdout=subprocess.PIPE).stdout
        return json.loads(output)[0]


class Podman:
    """podman with its own storage, runtime state and temporary files under WORKDIR.

    It runs with ``--runtime runc`` and explicit ulimits within this
    machine's hard limits (its defaults ask for more than a container host
    may allow, and fail).
    """

    def __init__(self, workdir):
        self.path = installed("podman")
        self.workdir = workdir
        for name in ("root", "runroot", "tmp"):
            os.makedirs(os.path.join(workdir, name), exist_ok=True)
        files = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
        # No process limit above pid_max means anything; runc's setrlimit of a
        # larger nproc failed with EPERM on the machine this was written on.
        with open("/proc/sys/kernel/pid_max") as pid_max:
            processes = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], int(pid_max.read()))
        self.ulimits = ["--ulimit", f"nofile={files}:{files}",
                        "--ulimit", f"nproc={processes}:{processes}"]

    def argv(self, *arguments):
        return [self.path, "--root", os.path.join(self.workdir, "root"),
                "--runroot", os.path.join(self.workdir, "runroot"),
                "--tmpdir", os.path.join(self.workdir, "tmp"),
                "--runtime", "runc", *arguments]

    def run_argv(self, *arguments):
        """``podman run`` with the ulimits; ARGUMENTS are run's own."""
        return self.argv("run", *self.ulimits, *arguments)

    def __call__(self, *arguments, stdout=subprocess.DEVNULL):
        return command(self.argv(*arguments), stdout=stdout)

    def remove_everything(self):
        subprocess.run(self.argv("rm", "--all", "--force", "--time", "0"), capture_output=True)
        subprocess.run(self.argv("rmi", "--all", "--force"), capture_output=True)


class Bench:
    """The shared material: busybox for every peer, an OCI bundle, the engines."""

    def __init__(self, workdir, scale):
        self.workdir = workdir
        self.scale = scale
        self.tarball = make_busybox_tarball(os.path.join(workdir, "busybox.tar"), workdir)
        self.bundle = make_bundle(os.path.join(workdir, "bundle"), self.tarball)
        self.rootfs = os.path.join(self.bundle, "rootfs")
        self.minidocker = Minidocker(os.path.join(workdir, "engine"))
        self.minidocker_setup = ""
        # Byte-compile the engine first, as a user's first run would: with
        # PYTHONDONTWRITEBYTECODE set (some CI images set it) every run would
        # compile every module again, about 100 ms that no user pays twice.
        # -f: compileall skips a file whose .pyc records the same mtime, to
        # the second, while the import also compares the size; a source
        # changed within that second (a checkout, an edit) would otherwise
        # be compiled again at every run of the bench.
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-f",
                        os.path.join(REPO, "minidocker")],
                       check=True)
        try:
            self.minidocker("import", self.tarball, "busybox")
        except Failed as reason:
            self.minidocker_setup = f"failed: minidocker import: {reason}"
        try:
            self.podman = Podman(os.path.join(workdir, "podman"))
            self.podman("import", self.tarball, "localhost/busybox")
            self.podman_setup = ""
        except (NotAvailable, Failed) as reason:
            self.podman = None
            self.podman_setup = f"not available: {reason}"

    def rounds(self, scenario):
        timed, warmup = ROUNDS[scenario]
        return max(1, round(timed * self.scale)), (warmup if self.scale >= 1 else 0)

    def run_minidocker(self, name, run_once, scenario, **options):
        if self.minidocker_setup:
            return Row(name, note=self.minidocker_setup)
        return measure(name, run_once, *self.rounds(scenario), **options)

    def run_podman(self, name, run_once, scenario, **options):
        if self.podman is None:
            return Row(name, note=self.podman_setup)
        return measure(name, run_once, *self.rounds(scenario), **options)

    def close(self):
        if self.podman:
            self.podman.remove_everything()
        if not self.minidocker_setup:
            # Containers, and the bridges and rules of the networks, which
            # outlive their containers (and the private mount namespace).
            subprocess.run(self.minidocker.argv("system", "reset", "--force"),
                           capture_output=True, env=self.minidocker.environment())


def make_bundle(bundle, tarball):
    """An OCI bundle (``runc spec``) whose rootfs is the same busybox, running ``true``."""
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs)
    subprocess.run(["tar", "-xf", tarball, "-C", rootfs], check=True)
    spec = {}
    if shutil.which("runc"):
        subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    elif shutil.which("crun"):
        subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    else:
        return bundle
    path = os.path.join(bundle, "config.json")
    with open(path) as handle:
        spec = json.load(handle)
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["terminal"] = False
    with open(path, "w") as handle:
        json.dump(spec, handle, indent=2)
    return bundle


# -- the scenarios ----------------------------------------------------------------

def scenario_start(bench):
    """Start-to-exit of ``true`` with no network, every peer in turns."""
    minidocker = bench.minidocker
    peers = [Row("minidocker", note=bench.minidocker_setup) if bench.minidocker_setup else
             ("minidocker", lambda _: minidocker("run", "--rm", "--network", "none", "busybox",
                                                  "true"), "")]
    for runtime in ("runc", "crun"):
        peers.append((runtime, lambda _, runtime=runtime: run_bundle(bench, runtime),
                      "OCI bundle; a new network namespace with only lo"))
    if bench.podman:
        podman_argv = bench.podman.run_argv("--rm", "--network=none", "localhost/busybox", "true")
        peers.append(("podman", lambda _: command(podman_argv), ""))
    else:
        peers.append(Row("podman", note=bench.podman_setup))
    floor = ["unshare", "--mount", "--uts", "--ipc", "--net", "--pid", "--fork",
             "chroot", bench.rootfs, "/bin/true"]
    peers.append(("kernel floor", lambda _: command(floor),
                  "unshare (mnt uts ipc net pid) + chroot + exec"))
    python = [sys._base_executable, "-c", "pass"]
    peers.append(("python3.12 -c pass", lambda _: command(python),
                  f"{sys._base_executable}, no site-packages of ours"))
    return measure_in_turns(peers, *bench.rounds("start"))


def run_bundle(bench, runtime):
    installed(runtime)
    command([runtime, "--root", os.path.join(bench.workdir, f"{runtime}-state"),
             "run", "--bundle", bench.bundle, f"mdbench-{runtime}"])


def scenario_start_network(bench):
    """Start-to-exit of ``true`` on each engine's default network, in turns."""
    minidocker = bench.minidocker
    mode = minidocker_default_network(bench)
    if bench.minidocker_setup:
        peers = [Row("minidocker", note=bench.minidocker_setup)]
    elif mode in ("", "none"):
        peers = [Row("minidocker", note="not available yet: `run`'s default network is "
                                        f"still {mode or 'unset'} (chapter 5 not wired in)")]
    else:
        peers = [("minidocker", lambda _: minidocker("run", "--rm", "busybox", "true"),
                  f"default network: {mode}")]
    for runtime in ("runc", "crun"):
        peers.append(Row(runtime, note="no default network: an OCI runtime leaves networking to "
                                       "its caller (see the no-network rows)"))
    if bench.podman:
        podman_argv = bench.podman.run_argv("--rm", "localhost/busybox", "true")
        peers.append(("podman", lambda _: command(podman_argv), "default network: netavark bridge"))
    else:
        peers.append(Row("podman", note=bench.podman_setup))
    return measure_in_turns(peers, *bench.rounds("start-network"))


def minidocker_default_network(bench):
    """Return the NetworkMode ``create`` gives a container by default ("" if unknown)."""
    if bench.minidocker_setup:
        return ""
    try:
        bench.minidocker("create", "--name", "mdbench-probe", "busybox", "true")
    except Failed:
        return ""
    try:
        return bench.minidocker.inspect("mdbench-probe").get("HostConfig", {}).get("NetworkMode", "")
    finally:
        bench.minidocker("rm", "-f", "mdbench-probe")


def scenario_output(bench):
    """A container writing 100 MB to standard output; then reading it back with logs."""
    script = f"yes {LINE} | head -c {OUTPUT_BYTES}"
    minidocker = bench.minidocker
    rows = []
    try:
        if bench.minidocker_setup:
            raise NotAvailable(bench.minidocker_setup)
        minidocker.has("logs")
        runs, logs = [], []
        rounds, warmup = bench.rounds("output")
        for index in range(warmup + rounds):
            name = f"mdbench-output-{index}"
            runs.append(time_one(lambda: minidocker("run", "--name", name, "--network", "none",
                                                    "busybox", "sh", "-c", script)))
            logs.append(time_one(lambda: minidocker("logs", name)))
            minidocker("rm", name)
        rows += [Row("minidocker run", runs[warmup:], kind="run"),
                 Row("minidocker logs", logs[warmup:], kind="logs")]
    except NotAvailable as reason:
        rows += [Row("minidocker run", note=f"not available: {reason}", kind="run"),
                 Row("minidocker logs", note=f"not available: {reason}", kind="logs")]
    except Failed as reason:
        rows += [Row("minidocker run", note=f"failed: {reason}", kind="run"),
                 Row("minidocker logs", note=f"failed: {reason}", kind="logs")]
    floor = measure("host floor", lambda _: command(["busybox", "sh", "-c", script]),
                    *bench.rounds("output"), note="the same shell line on the host, to /dev/null")
    floor.kind = "run"
    rows.append(floor)
    if not bench.podman:
        return rows + [Row("podman run", note=bench.podman_setup, kind="run"),
                       Row("podman logs", note=bench.podman_setup, kind="logs")]
    podman = bench.podman
    try:
        runs, logs = [], []
        rounds, warmup = bench.rounds("output")
        for index in range(warmup + rounds):
            name = f"mdbench-output-{index}"
            argv = podman.run_argv("--name", name, "--network=none", "--log-driver", "k8s-file",
                                   "localhost/busybox", "sh", "-c", script)
            runs.append(time_one(lambda: command(argv)))
            logs.append(time_one(lambda: podman("logs", name)))
            podman("rm", name)
        rows += [Row("podman run", runs[warmup:], note="log driver k8s-file", kind="run"),
                 Row("podman logs", logs[warmup:], kind="logs")]
    except Failed as reason:
        rows += [Row("podman run", note=f"failed: {reason}", kind="run"),
                 Row("podman logs", note=f"failed: {reason}", kind="logs")]
    return rows


def time_one(action):
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def scenario_pull(bench):
    """Pull a five-layer image from docker-registry on 127.0.0.1."""
    from helpers import registry as registries
    installed("docker-registry")
    installed("umoci")
    installed("skopeo")
    layout = make_layered_image(os.path.join(bench.workdir, "layered"), bench.tarball)
    server = registries.RegistryServer(os.path.join(bench.workdir, "registry"))
    try:
        reference = f"{server.address}/bench/layers:latest"
        registries.skopeo_push(layout, "bench", reference)
        return pull_rows(bench, reference)
    finally:
        server.stop()


def pull_rows(bench, reference):
    """Time the pulls, minidocker and skopeo in turns, each round into a directory of its own.

    The rounds' directories are removed only when every peer is done.  On
    ext4 without a journal (the reference VM's disk), an inode freed in the
    last minute is skipped, with a scan, by every new inode after it
    (bench/README.md, "What the filesystem does to the numbers"): removing a
    round's ~700 files right before the next round would make that round
    pay for the benchmark's own clean-up, and only the peers that create
    many files (minidocker unpacks layers; skopeo stores seven blobs).
    """
    minidocker, podman = bench.minidocker, bench.podman
    scratch = os.path.join(bench.workdir, "pulls")

    def fresh_directory(peer):
        def make(index):
            path = os.path.join(scratch, f"{peer}-{index}")
            os.makedirs(path)
            written_out()
            return path
        return make

    def written_out(_=None):
        # Off the clock, the page cache's dirty data goes to the disk first.
        # minidocker makes each layer durable (syncfs(2), which writes out
        # all that is dirty on the filesystem) before it names it; skopeo
        # and podman leave their writes to the kernel, and a minidocker
        # round would write out the skopeo round's blobs before it.
        os.sync()

    peers = [Row("minidocker pull", note=bench.minidocker_setup) if bench.minidocker_setup else
             ("minidocker pull", lambda root: minidocker("pull", reference, root=root),
              "into an empty engine root", fresh_directory("minidocker"))]
    skopeo = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{reference}"]
    peers.append(("skopeo copy", lambda path: command(skopeo + [f"oci:{path}:latest"]),
                  "into an empty OCI layout (stores the blobs, unpacks nothing)",
                  fresh_directory("skopeo")))
    rows = measure_in_turns(peers, *bench.rounds("pull"))
    unmount_under(scratch)
    shutil.rmtree(scratch)

    def forget_image(_):
        subprocess.run(podman.argv("rmi", "--force", reference), capture_output=True)

    rows.append(bench.run_podman(
        "podman pull", lambda _: podman("pull", "--quiet", "--tls-verify=false", reference), "pull",
        prepare=written_out, clean=forget_image,
        note="image removed after each round (its storage has one root)"))
    return rows


def make_layered_image(workdir, tarball):
    """An OCI layout with busybox plus four layers of 8 MB of random data each."""
    from helpers import registry as registries
    layout = os.path.join(workdir, "layout")
    os.makedirs(workdir)
    registries.umoci("init", "--layout", layout)
    registries.umoci("new", "--image", f"{layout}:bench")
    registries.umoci("raw", "add-layer", "--image", f"{layout}:bench", tarball)
    for number in range(4):
        entries = [registries.tar_entry(f"data{number}/", kind=tarfile.DIRTYPE, mode=0o755)]
        entries += [registries.tar_entry(f"data{number}/part{part}", data=os.urandom(1 << 20))
                    for part in range(8)]
        path = os.path.join(workdir, f"layer{number}.tar")
        with open(path, "wb") as handle:
            handle.write(registries.layer_tar(entries))
        registries.umoci("raw", "add-layer", "--image", f"{layout}:bench", path)
        os.remove(path)
    registries.umoci("config", "--image", f"{layout}:bench", "--config.cmd", "/bin/sh",
                     "--architecture", "amd64", "--os", "linux")
    return layout


def scenario_commit(bench):
    """Commit a container with 200 MB of changes in 2,000 files."""
    script = (f"mkdir /data && i=0 && while [ $i -lt {COMMIT_FILES} ]; do "
              f"dd if=/dev/urandom of=/data/f$i bs={COMMIT_FILE_BYTES} count=1 2>/dev/null; "
              f"i=$((i+1)); done")
    minidocker, podman = bench.minidocker, bench.podman

    def filled_minidocker_container(index):
        name = f"mdbench-commit-{index}"
        minidocker("run", "--name", name, "--network", "none", "busybox", "sh", "-c", script)
        return name

    def remove_minidocker_pair(name):
        subprocess.run(minidocker.argv("rm", "-f", name), capture_output=True,
                       env=minidocker.environment())
        subprocess.run(minidocker.argv("rmi", f"{name}:committed"), capture_output=True,
                       env=minidocker.environment())

    rows = []
    try:
        if not bench.minidocker_setup:
            minidocker.has("commit")
        rows.append(bench.run_minidocker(
            "minidocker commit", lambda name: minidocker("commit", name, f"{name}:committed"),
            "commit", prepare=filled_minidocker_container, clean=remove_minidocker_pair))
    except NotAvailable as reason:
        rows.append(Row("minidocker commit", note=f"not available yet: {reason}"))
    if not podman:
        return rows + [Row("podman commit", note=bench.podman_setup)]

    def filled_podman_container(index):
        name = f"mdbench-commit-{index}"
        command(podman.run_argv("--name", name, "--network=none", "localhost/busybox",
                                "sh", "-c", script))
        return name

    def remove_podman_pair(name):
        subprocess.run(podman.argv("rm", "--force", name), capture_output=True)
        subprocess.run(podman.argv("rmi", "--force", f"localhost/{name}:committed"),
                       capture_output=True)

    rows.append(bench.run_podman(
        "podman commit", lambda name: podman("commit", "--quiet", name, f"localhost/{name}:committed"),
        "commit", prepare=filled_podman_container, clean=remove_podman_pair))
    return rows


class DetachedPeer:
    """How one engine starts, finds, lists and removes detached containers."""

    def __init__(self, name, label, start, pid_of, list_containers, remove):
        self.name, self.label = name, label
        self.start, self.pid_of = start, pid_of
        self.list_containers, self.remove = list_containers, remove
        self.starts, self.memories, self.listings = [], [], []
        self.failure = None

    @classmethod
    def missing(cls, name, label, reason):
        """An engine that is not here: its three rows say why."""
        peer = cls(name, label, None, None, None, None)
        peer.failure = reason
        return peer

    def rows(self):
        names = (f"{self.name} run -d x{DETACHED_COUNT}", f"{self.name} {self.label} PSS",
                 f"{self.name} ps")
        if self.failure:
            return [Row(name, note=self.failure, kind=kind)
                    for name, kind in zip(names, ("start", "memory", "ps"))]
        return [Row(names[0], self.starts, kind="start",
                    note="--network none, one after another, in turns with the other engine"),
                Row(names[1], unit="bytes", values=self.memories, kind="memory",
                    note="PSS of the host processes above each container's PID 1"),
                Row(names[2], self.listings, kind="ps",
                    note=f"with {DETACHED_COUNT} of its own running")]


def scenario_detached(bench):
    """Start 50 detached containers; their monitors' memory; ``ps`` among them."""
    peers = []
    if bench.minidocker_setup:
        peers.append(DetachedPeer.missing("minidocker", "monitor", bench.minidocker_setup))
    else:
        minidocker = bench.minidocker

        def start(name):
            minidocker("run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "3600")

        def pid_of(name):
            return minidocker.inspect(name)["State"]["Pid"]

        peers.append(DetachedPeer("minidocker", "monitor", start, pid_of,
                                  lambda: minidocker("ps"),
                                  lambda names: minidocker("rm", "-f", *names)))
    if not bench.podman:
        peers.append(DetachedPeer.missing("podman", "conmon", bench.podman_setup))
    else:
        podman = bench.podman

        def podman_start(name):
            command(podman.run_argv("-d", "--name", name, "--network=none", "localhost/busybox",
                                    "sleep", "3600"))

        def podman_pid_of(name):
            output = podman("inspect", "--format", "{{.State.Pid}}", name,
                            stdout=subprocess.PIPE).stdout
            return int(output)

        peers.append(DetachedPeer("podman", "conmon", podman_start, podman_pid_of,
                                  lambda: podman("ps"),
                                  lambda names: podman("rm", "--force", "--time", "0", *names)))
    start_in_turns(peers, bench)
    return [row for peer in peers for row in peer.rows()]


def start_in_turns(peers, bench):
    """Start DETACHED_COUNT containers per engine, one of each engine in turn.

    Each engine's total is the sum of its own starts: the machine's
    minute-to-minute drift falls on every engine alike, as in
    :func:`measure_in_turns`.  Then the monitors' memory, and ``ps`` with
    each engine's containers running.
    """
    rounds, _ = bench.rounds("detached")
    for round_number in range(rounds):
        names = [f"mdbench-d{round_number}-{index}" for index in range(DETACHED_COUNT)]
        started = {peer.name: [] for peer in peers}
        totals = {peer.name: 0.0 for peer in peers}
        try:
            for name in names:
                for peer in peers:
                    if peer.failure:
                        continue
                    try:
                        totals[peer.name] += time_one(lambda: peer.start(name))
                    except Failed as reason:
                        peer.failure = f"failed: {reason}"
                        continue
                    started[peer.name].append(name)
            for peer in peers:
                if peer.failure:
                    continue
                try:
                    peer.starts.append(totals[peer.name])
                    peer.memories += [keeper_memory(peer.pid_of(name)) for name in names]
                    peer.listings += time_rounds(lambda _: peer.list_containers(),
                                                 *bench.rounds("start"))
                except Failed as reason:
                    peer.failure = f"failed: {reason}"
        finally:
            for peer in peers:
                if started[peer.name]:
                    peer.remove(started[peer.name])


def keeper_memory(pid):
    """Sum the PSS of the processes that keep a container alive above its PID 1.

    They are PID 1's ancestors that started after this benchmark did:
    minidocker's monitor, podman's conmon.  The walk stops at the first
    older process (init, or a subreaper the machine already had).
    """
    import psutil
    bench_started = psutil.Process().create_time()
    total = 0
    process = psutil.Process(pid).parent()
    while process is not None and process.create_time() >= bench_started:
        total += process.memory_full_info().pss
        process = process.parent()
    return total


# -- the private world the run happens in -------------------------------------------

def enter_private_mount_namespace(argv):
    """Re-execute this script in a mount namespace of its own (see the module docstring)."""
    if os.environ.get(PRIVATE_MARK) == "1":
        return
    environment = dict(os.environ, **{PRIVATE_MARK: "1"})
    os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private",
                           sys.executable, os.path.abspath(__file__), *argv], environment)


PODMAN_LOCK = "/dev/shm/libpod_lock"


class HostState:
    """What the peers may leave on the host outside the mount namespace, and its removal.

    podman's netavark adds iptables chains (NETAVARK...) and cgroups
    (libpod_parent) that outlive the containers, podman its lock file in
    /dev/shm; the runtime state
    directories may have to be created as mount points.  Whatever was not
    there before the run is removed after it.
    """

    def __init__(self):
        self.created_directories = []
        self.chains = netavark_chains()
        self.cgroups = set(glob.glob("/sys/fs/cgroup/*/libpod_parent"))
        self.links = set(os.listdir("/sys/class/net"))
        self.had_podman_lock = os.path.exists(PODMAN_LOCK)

    def hide_runtime_state(self):
        """Give each runtime state directory a fresh tmpfs; hide the empty cgroup2 tree."""
        for directory in RUNTIME_STATE:
            if not os.path.isdir(directory):
                os.makedirs(directory)
                self.created_directories.append(directory)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0700", "mdbench", directory],
                           check=True)
        if is_hybrid_cgroup_host():
            # Unmounted here only, so no engine in this run can leave a
            # cgroup in the host's cgroup2 tree either.  (A tmpfs on top
            # does not do: mountinfo still lists the cgroup2 mount under it,
            # and crun and minidocker then look for it and fail.)
            subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)

    def restore(self):
        """Remove what the run added: chains, cgroups, links, directories."""
        left = []
        for table, chain in sorted(netavark_chains() - self.chains):
            remove_chain(table, chain)
        for path in sorted(set(glob.glob("/sys/fs/cgroup/*/libpod_parent")) - self.cgroups):
            left += remove_cgroup_tree(path)
        for link in sorted(set(os.listdir("/sys/class/net")) - self.links):
            if link.startswith(("podman", "cni-podman")):
                subprocess.run(["ip", "link", "delete", link], capture_output=True)
        if not self.had_podman_lock and os.path.exists(PODMAN_LOCK):
            os.unlink(PODMAN_LOCK)   # podman's shared-memory locks outlive its containers
        for directory in self.created_directories:
            subprocess.run(["umount", directory], capture_output=True)
            try:
                os.rmdir(directory)
            except OSError as error:
                left.append(f"{directory}: {error.strerror}")
        return left


def is_hybrid_cgroup_host():
    with open("/proc/self/mountinfo") as mountinfo:
        kinds = {line.split(" - ")[1].split()[0]: line.split()[4] for line in mountinfo
                 if line.split()[4].startswith("/sys/fs/cgroup")}
    return "cgroup" in kinds and kinds.get("cgroup2") == "/sys/fs/cgroup/unified"


def netavark_chains():
    """Return {(table, chain)} of netavark's iptables chains."""
    chains = set()
    for table in ("filter", "nat"):
        result = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True)
        for line in result.stdout.splitlines():
            words = line.split()
            if words[:1] == ["-N"] and words[1].upper().startswith("NETAVARK"):
                chains.add((table, words[1]))
    return chains


def remove_chain(table, chain):
    """Delete every rule jumping to CHAIN, then the chain itself."""
    rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True,
                           text=True).stdout.splitlines()
    for rule in rules:
        words = rule.split()
        if words[:1] == ["-A"] and words[-2:] == ["-j", chain]:
            subprocess.run(["iptables", "-t", table, "-D", *words[1:]], capture_output=True)
    subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
    subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)


def remove_cgroup_tree(path):
    left = []
    for directory, _, _ in sorted(os.walk(path), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(directory)
        except OSError as error:
            left.append(f"{directory}: {error.strerror}")
    return left


def unmount_under(path):
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo if line.split()[4].startswith(path)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


# -- the report ----------------------------------------------------------------------

def filesystem(path):
    """Describe the filesystem under ``path``, saying if an ext4 has no journal.

    Without a journal ext4 does not reuse an inode for 60 seconds after it
    was freed (five minutes while its inode table block is dirty), and every
    allocation scans past each such inode (``recently_deleted()`` in
    fs/ext4/ialloc.c).  A run that creates and deletes thousands of files
    makes every later mkdir, create and symlink there slower, by up to a
    millisecond each: pull and commit, which make hundreds, feel it most.
    """
    device = os.stat(path).st_dev
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            major, minor = fields[2].split(":")
            if os.makedev(int(major), int(minor)) != device:
                continue
            kind = fields[fields.index("-") + 1]
            source = os.path.basename(fields[fields.index("-") + 2])
            journal = f"/sys/fs/ext4/{source}/journal_task"
            if kind == "ext4" and os.path.exists(journal):
                with open(journal) as handle:
                    if handle.read().strip() == "<none>":
                        return "ext4 without a journal"
            return kind
    return "unknown"


def machine(workdir):
    """Describe where the numbers came from."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        memory = int(meminfo.readline().split()[1]) // 1024
    distribution = "Linux"
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    distribution = line.split("=", 1)[1].strip().strip('"')
    versions = {}
    for tool, argv in (("runc", ["runc", "--version"]), ("crun", ["crun", "--version"]),
                       ("podman", ["podman", "--version"]), ("skopeo", ["skopeo", "--version"])):
        if shutil.which(tool):
            versions[tool] = subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()[0]
    return {"cpu": f"{cpu}, {os.cpu_count()} cores", "memory": f"{memory} MiB",
            "kernel": platform.release(), "distribution": distribution,
            "python": platform.python_version(), "tools": versions,
            "filesystem": f"{os.path.dirname(workdir)} on {filesystem(os.path.dirname(workdir))}",
            "load": " ".join(f"{load:.2f}" for load in os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def format_value(row, value):
    if row.unit == "bytes":
        return f"{value / 1e6:.1f} MB"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def summary(row):
    """(min, median, max, n) of a row's samples, whichever unit it has."""
    samples = row.values if row.unit == "bytes" else row.seconds
    if not samples:
        return None
    return min(samples), statistics.median(samples), max(samples), len(samples)


def markdown(results, about):
    lines = ["# minidocker benchmark results", "",
             f"Machine: {about['cpu']}, {about['memory']}, kernel {about['kernel']}, "
             f"{about['distribution']}, Python {about['python']}; "
             + ", ".join(about["tools"].values()) + f"; the work directory in "
             f"{about['filesystem']}. Run {about['date']}; load average "
             f"at the end {about['load']} (other work on the machine shows up as spread).", "",
             "Every peer is timed the same way: untimed warm-up rounds, then timed rounds of one "
             "command each (output to /dev/null); in the start scenarios the peers take turns, "
             "one round each, and detached containers start one of each engine in turn. "
             "*ratio* is the peer's median divided by "
             "minidocker's in the same scenario (above 1: minidocker is faster).", ""]
    for scenario, rows in results.items():
        lines += [f"## {scenario}", "", "| peer | min | median | max | rounds | ratio | note |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        references = {row.kind: summary(row) for row in rows
                      if row.name.startswith("minidocker") and summary(row)}
        for row in rows:
            numbers = summary(row)
            if numbers is None:
                lines.append(f"| {row.name} | | | | | | {row.note} |")
                continue
            low, middle, high, count = numbers
            reference = references.get(row.kind)
            ratio = f"{middle / reference[1]:.2f}" if reference and reference[1] else ""
            lines.append(f"| {row.name} | {format_value(row, low)} | {format_value(row, middle)} | "
                         f"{format_value(row, high)} | {count} | {ratio} | {row.note} |")
        lines.append("")
    lines += ["## Targets (issue 9)", "", "| what | minidocker | peer | minidocker ÷ peer | target | met |",
              "|---|---:|---:|---:|---:|---|"]
    for what, ours, theirs, ratio, target, met in targets(results):
        lines.append(f"| {what} | {ours} | {theirs} | {ratio} | {target} | {met} |")
    return "\n".join(lines) + "\n"


def targets(results):
    """Yield (what, ours, theirs, ratio, target, met) for every target of the issue."""
    for scenario, what, ours_name, theirs_name, limit in TARGETS:
        rows = {row.name: row for row in results.get(scenario, [])}
        ours, theirs = rows.get(ours_name), rows.get(theirs_name)
        if scenario not in results:
            continue
        if not (ours and theirs and ours.median() and theirs.median()):
            missing = ours if not (ours and ours.median()) else theirs
            yield (what, "", "", "", f"≤ {limit}x {theirs_name}",
                   f"not measured ({missing.note if missing else 'no row'})")
            continue
        ratio = ours.median() / theirs.median()
        yield (what, format_value(ours, ours.median()), format_value(theirs, theirs.median()),
               f"{ratio:.2f}", f"≤ {limit}x {theirs_name}", "yes" if ratio <= limit else "**no**")
    monitor = {row.name: row for row in results.get("detached", [])}.get("minidocker monitor PSS")
    if monitor is not None:
        if monitor.values:
            middle = statistics.median(monitor.values)
            yield ("monitor memory (PSS)", format_value(monitor, middle), "", "", "≤ 10 MB",
                   "yes" if middle <= MONITOR_TARGET_BYTES else "**no**")
        else:
            yield ("monitor memory (PSS)", "", "", "", "≤ 10 MB", f"not measured ({monitor.note})")


# -- the run -------------------------------------------------------------------------

RUNNERS = {"start": scenario_start, "start-network": scenario_start_network,
           "output": scenario_output, "pull": scenario_pull, "commit": scenario_commit,
           "detached": scenario_detached}


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description="Benchmark minidocker beside runc, crun and podman.")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"which to run (default all): {', '.join(SCENARIOS)}")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every scenario's timed rounds (below 1 also drops warm-up)")
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"),
                        help="where results.md and results.json go")
    arguments = parser.parse_args(argv)
    for scenario in arguments.scenarios:
        if scenario not in SCENARIOS:
            parser.error(f"no scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    return arguments


def remove_work_directory(workdir, timeout=30.0):
    """Remove the work directory once no process works in it; return what is left.

    When a podman container ends, conmon starts ``podman container
    cleanup``, which may still run after ``podman rm`` has returned; run
    after the removal, it makes podman's directories under the work
    directory again.  So the removal waits until no process names the work
    directory on its command line (conmon and podman do, through --root).
    """
    deadline = time.monotonic() + timeout
    while processes_naming(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    unmount_under(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    return [workdir] if os.path.exists(workdir) else []


def processes_naming(path):
    """The PIDs of the processes (other than this one) whose command line holds ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if path.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            pass  # it ended meanwhile
    return found


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if os.geteuid() != 0:
        sys.exit("the benchmark starts containers: run it as root (sudo make bench)")
    enter_private_mount_namespace(argv)
    arguments = parse_arguments(argv)
    chosen = arguments.scenarios or list(SCENARIOS)
    state = HostState()
    workdir = tempfile.mkdtemp(prefix="minidocker-bench-", dir="/tmp")
    results = {}
    try:
        state.hide_runtime_state()
        bench = Bench(workdir, arguments.scale)
        try:
            for scenario in chosen:
                print(f"bench: {scenario} ...", file=sys.stderr, flush=True)
                try:
                    results[scenario] = RUNNERS[scenario](bench)
                except NotAvailable as reason:
                    results[scenario] = [Row("(scenario)", note=f"not available: {reason}")]
        finally:
            bench.close()
    finally:
        left = remove_work_directory(workdir) + state.restore()
        for thing in left:
            print(f"bench: could not remove {thing}", file=sys.stderr)
    about = machine(workdir)
    os.makedirs(arguments.results, exist_ok=True)
    report = markdown(results, about)
    with open(os.path.join(arguments.results, "results.md"), "w") as handle:
        handle.write(report)
    with open(os.path.join(arguments.results, "results.json"), "w") as handle:
        json.dump({"machine": about, "scenarios": {name: [row.as_dict() for row in rows]
                                                   for name, rows in results.items()}},
                  handle, indent=2)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
