"""Chapter 2: control groups, or how much a container may use.

Namespaces (chapter 1) decide what a process can *see*.  Control groups
decide how much it can *use*: memory, CPU time, which CPUs, how many
processes.  The interface is a filesystem.  A cgroup is a directory; the
files in it are its knobs.  Make a directory, write a limit into one of its
files, write a PID into its ``cgroup.procs``, and the kernel enforces the
limit on that process and on every child it forks from then on.  Remove the
directory once it is empty and the group is gone.

Two generations of the interface are in use, and an engine must speak both:

=================  ============================================  ===============================
                   cgroup v1 (CentOS 7, this lab's host)         cgroup v2 (modern distributions)
=================  ============================================  ===============================
trees              one hierarchy per controller                  one tree for every controller
a container is     a directory in *each* hierarchy               one directory
turn a controller  it is on wherever its hierarchy is mounted    the parent writes ``+memory``
on                                                               into ``cgroup.subtree_control``
``-m``             ``memory.limit_in_bytes``                     ``memory.max``
``--memory-swap``  ``memory.memsw.limit_in_bytes`` (mem+swap)    ``memory.swap.max`` (swap only)
``--cpus``         ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``  ``cpu.max`` ("quota period")
``--cpu-shares``   ``cpu.shares``                                ``cpu.weight`` (1-10000)
``--cpuset-cpus``  ``cpuset.cpus`` (and ``cpuset.mems``)         ``cpuset.cpus``
``--pids-limit``   ``pids.max``                                  ``pids.max``
OOM kills          ``memory.oom_control``: ``oom_kill N``        ``memory.events``: ``oom_kill N``
freeze             ``freezer.state``: ``FROZEN``                 ``cgroup.freeze``: ``1``
=================  ============================================  ===============================

Where the hierarchies are mounted is read from ``/proc/self/mountinfo``,
never assumed.  A host that mounts controllers as v1 hierarchies gets the
v1 driver, even if it also mounts an (empty) cgroup2 tree beside them, as
systemd's "hybrid" mode does; a host with only the unified tree gets the v2
driver.  Within a driver each controller is looked up on its own, and a
limit that needs a controller the host lacks (no ``pids`` controller on
CentOS 7's 3.10 kernel) is refused with an :class:`~minidocker.host.EngineError`
rather than quietly ignored.

A container's group is called ``minidocker/ID`` below the root of every
hierarchy, as Docker's ``cgroupfs`` driver uses ``docker/ID``.
"""

import errno
import os
import _signal  # not signal, nor re or functools: see host.py
import stat
import time

from minidocker import host

CHAPTER = 2

#: Docker refuses smaller memory limits ("Minimum memory limit allowed is 6MB").
MINIMUM_MEMORY = 6 * 1024 * 1024

#: The CFS period Docker uses for ``--cpus``: the quota is a share of it.
CPU_PERIOD_MICROSECONDS = 100_000

#: The v1 controllers a container is placed under.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpuset", "pids", "freezer", "blkio", "devices")

#: The devices a container may use, as devices.allow lines ("TYPE MAJOR:MINOR
#: ACCESS"): Docker's default list.  Making any node is allowed ("m"), so an
#: image can carry device files, but reading or writing one is not unless
#: it is listed: a disk node made with mknod stays closed.
DEFAULT_DEVICE_RULES = (
    "c *:* m", "b *:* m",
    "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",  # null zero full random urandom
    "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm",                          # tty, ptmx, the ptys
    "c 10:200 rwm",                                                   # net/tun
)

#: The v2 controllers a container's parent switches on for its children.
V2_CONTROLLERS = ("memory", "cpu", "cpuset", "pids", "io")

#: cpu.shares bounds the kernel enforces (kernel/sched: MIN_SHARES, MAX_SHARES).
MINIMUM_CPU_SHARES = 2
MAXIMUM_CPU_SHARES = 262_144


# -- what the user asked for ---------------------------------------------

class Limits:
    """The resource limits of one container, as ``docker run`` takes them.

    ``memory`` and ``memory_swap`` are bytes (``memory_swap`` counts memory
    plus swap, ``-1`` meaning unlimited swap); ``cpus`` is a number of CPUs
    (``0.5`` is half of one); ``cpuset_cpus`` is a CPU list such as
    ``"0-1,3"``; ``pids_limit`` of zero or less means unlimited.  None
    everywhere means "no limit".
    """

    def __init__(self, memory=None, memory_swap=None, cpus=None, cpu_shares=None,
                 cpuset_cpus=None, pids_limit=None, devices=None):
        self.memory = memory
        self.memory_swap = memory_swap
        self.cpus = cpus
        self.cpu_shares = cpu_shares
        self.cpuset_cpus = cpuset_cpus
        self.pids_limit = pids_limit
        #: devices.allow lines beyond the default list; ["a *:* rwm"] allows all
        self.devices = devices

    def __repr__(self):
        given = ", ".join(f"{key}={value!r}" for key, value in vars(self).items()
                          if value is not None)
        return f"Limits({given})"

    def check(self):
        """Refuse the combinations Docker refuses, with Docker's words."""
        if self.memory is not None and self.memory < MINIMUM_MEMORY:
            raise host.EngineError("Minimum memory limit allowed is 6MB")
        if self.memory_swap is not None:
            if self.memory is None:
                raise host.EngineError(
                    "You should always set the Memory limit when using Memoryswap limit, see usage")
            if self.memory_swap != -1 and self.memory_swap < self.memory:
                raise host.EngineError(
                    "Minimum memoryswap limit should be larger than memory limit, see usage")
        if self.cpus is not None:
            available = os.cpu_count()
            if not 0.01 <= self.cpus <= available:
                raise host.EngineError(
                    f"Range of CPUs is from 0.01 to {available}.00, "
                    f"as there are only {available} CPUs available")
        if self.cpu_shares is not None and self.cpu_shares < 0:
            raise host.EngineError(
                f"invalid CPU shares {self.cpu_shares}: the value must not be negative")
        if self.cpuset_cpus is not None:
            requested = parse_cpu_list(self.cpuset_cpus)
            online = parse_cpu_list(_read("/sys/devices/system/cpu/online"))
            if not requested <= online:
                raise host.EngineError(
                    f"Requested CPUs are not available - requested {self.cpuset_cpus}, "
                    f"available: {format_cpu_list(online)}")

    def memory_and_swap(self):
        """Return the memory-plus-swap limit Docker applies, or None.

        Docker's rule: without ``--memory-swap`` a container "can use as
        much swap as the --memory setting", so memory plus swap is twice the
        memory; ``-1`` lifts the swap limit; any other value is taken as is.
        """
        if self.memory is None:
            return None
        if self.memory_swap is None:
            return 2 * self.memory
        return self.memory_swap

    def host_config(self):
        """The limits under the ``HostConfig`` keys ``docker inspect`` shows.

        Docker writes 0 (or "") for "not set", fills in the memory-plus-swap
        it applies, and gives CPUs in billionths (``NanoCpus``).
        """
        return {
            "Memory": self.memory or 0,
            "MemorySwap": self.memory_and_swap() or 0,
            "NanoCpus": round(self.cpus * 1e9) if self.cpus else 0,
            "CpuShares": self.cpu_shares or 0,
            "CpusetCpus": self.cpuset_cpus or "",
            "PidsLimit": self.pids_limit,
        }

    @classmethod
    def from_host_config(cls, host_config):
        """Read the limits back from a container's ``HostConfig``."""
        memory = host_config.get("Memory") or None
        swap = host_config.get("MemorySwap") or None
        return cls(memory=memory,
                   # 2x memory is what Docker fills in when --memory-swap is absent
                   memory_swap=None if memory and swap == 2 * memory else swap,
                   cpus=host_config["NanoCpus"] / 1e9 if host_config.get("NanoCpus") else None,
                   cpu_shares=host_config.get("CpuShares") or None,
                   cpuset_cpus=host_config.get("CpusetCpus") or None,
                   pids_limit=host_config.get("PidsLimit"),
                   devices=device_rules(host_config))

    def needed_controllers(self):
        """Name the controllers these limits need, by their v1 names."""
        needed = {}
        if self.memory is not None:
            needed["memory"] = "-m/--memory"
        if self.cpus is not None:
            needed["cpu"] = "--cpus"
        if self.cpu_shares is not None:
            needed.setdefault("cpu", "--cpu-shares")
        if self.cpuset_cpus is not None:
            needed["cpuset"] = "--cpuset-cpus"
        if self.pids_limit is not None:
            needed["pids"] = "--pids-limit"
        return needed


def device_rules(host_config):
    """The devices.allow lines for ``--privileged`` and each ``--device``.

    A device is named by its host path; its type and numbers are read from
    the host when the container starts, as Docker does.
    """
    if host_config.get("Privileged"):
        return ["a *:* rwm"]
    rules = []
    for device in host_config.get("Devices") or []:
        try:
            info = os.stat(device["PathOnHost"])
        except OSError as error:
            raise host.EngineError(
                "error gathering device information while adding custom device "
                f"\"{device['PathOnHost']}\": {error.strerror.lower()}")
        kind = "b" if stat.S_ISBLK(info.st_mode) else "c"
        rules.append(f"{kind} {os.major(info.st_rdev)}:{os.minor(info.st_rdev)} "
                     f"{device['CgroupPermissions']}")
    return rules


def parse_bytes(text):
    """Turn a size such as ``32m``, ``1.5g`` or ``512`` into bytes.

    Docker's rule (``units.RAMInBytes``): a number, an optional unit
    b/k/m/g/t/p (powers of 1024, any case), an optional ``i`` and ``b``.
    """
    import re

    match = re.fullmatch(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", text.strip(), re.IGNORECASE)
    if not match:
        raise host.EngineError(f"invalid size: {text!r}")
    number, unit = match.groups()
    power = " kmgtp".index(unit.lower()) if unit else 0
    return int(float(number) * 1024 ** power)


def parse_memory_swap(text):
    """Parse ``--memory-swap``: a size, or ``-1`` for unlimited swap."""
    if text.strip() == "-1":
        return -1
    return parse_bytes(text)


def parse_cpu_list(text):
    """Turn a kernel CPU list such as ``0-2,4`` into a set of numbers."""
    import re

    cpus = set()
    for part in text.strip().split(","):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not match:
            raise host.EngineError(f"Invalid value {text} for cpuset cpus")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise host.EngineError(f"Invalid value {text} for cpuset cpus")
        cpus.update(range(first, last + 1))
    return cpus


def format_cpu_list(cpus):
    """Write a set of CPU numbers the way the kernel does: ``0-2,4``."""
    ranges = []
    for cpu in sorted(cpus):
        if ranges and ranges[-1][1] == cpu - 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


# -- one container's group -----------------------------------------------

class Cgroup:
    """A control group named ``name`` (such as ``minidocker/ID``) on this host.

    The object holds no state of its own beyond the name: every method
    reads or writes the kernel's files, so a ``Cgroup`` made by ``stats``
    in one process sees the group a monitor created in another.
    """

    def __init__(self, name):
        self.name = name.strip("/")
        self.driver = host_driver()

    @property
    def version(self):
        """1 or 2: which cgroup interface this host's driver speaks."""
        return self.driver.version

    def directories(self):
        """The directories that make up this group (one per v1 hierarchy)."""
        return self.driver.directories(self.name)

    def exists(self):
        """Say whether any directory of this group is still on the host."""
        return any(os.path.isdir(directory) for directory in self.directories())

    def create(self, limits):
        """Make the group and write its limits; return warnings for the user.

        Runs in the parent, before the container's process exists, so that
        the child can join a group whose limits are already in force.
        """
        limits.check()
        self.driver.require(limits.needed_controllers())
        # A parallel destroy may remove the shared parent directory between
        # our mkdir of it and our mkdir of the leaf: the leaf then fails
        # with ENOENT, and starting over is the whole fix.
        for _attempt in range(5):
            try:
                self.driver.make(self.name)
                break
            except FileNotFoundError:
                continue
        else:
            raise host.EngineError(f"cannot create cgroup {self.name}: its parent keeps vanishing")
        try:
            return self.driver.apply(self.name, limits)
        except FileNotFoundError as error:
            self.destroy()
            raise host.EngineError(
                f"this kernel has no {os.path.basename(error.filename)}, "
                f"so the limit cannot be set") from error
        except BaseException:
            self.destroy()
            raise

    def join(self, pid=0):
        """Move a process (0: the caller) into the group, in every hierarchy.

        The container's child calls this before it unshares its cgroup
        namespace and before it runs the user's command, so the command's
        first instruction already runs under the limits.  cgroups(7): "Writing
        the value 0 to a cgroup.procs file causes the writing process to be
        moved to the corresponding cgroup."

        A caller that moves itself, and has only one thread (the container's
        child never starts another), writes 0 to v1's ``tasks`` instead, which moves its one thread.  The
        kernel (cgroup_procs_write_start) then skips a global lock: "If we
        migrate a single thread, we don't care about threadgroup stability.
        If the thread is `current`, it won't exit(2) under our hands or
        change PID through exec(2) [...] Therefore, we can skip the global
        lock."  Taking that lock waits for an RCU grace period, 10 to 20 ms
        on the lab machine; skipping it makes the move take about one.
        """
        name = self.driver.own_thread_file if pid == 0 else "cgroup.procs"
        for directory in self.directories():
            _write(os.path.join(directory, name), str(pid))

    def processes(self):
        """Return the PIDs (as the host sees them) in the group, sorted."""
        pids = set()
        for directory in self.directories():
            try:
                pids.update(int(line) for line in _read(os.path.join(directory, "cgroup.procs")).split())
            except FileNotFoundError:
                continue  # not (or no longer) in this hierarchy
        return sorted(pids)

    def oom_killed(self):
        """Say whether the kernel's OOM killer killed a process of the group."""
        return self.driver.oom_kills(self.name) > 0

    def stats(self):
        """Read the group's usage counters.

        Returns a dict with ``cpu_nanoseconds`` (CPU time used so far),
        ``memory_usage`` and ``memory_limit`` (bytes; usage without the
        inactive page cache, as ``docker stats`` shows it), ``pids``,
        ``block_read`` and ``block_write`` (bytes).  A group that is gone
        (its container just ended) reads as all zeros.
        """
        try:
            return self.driver.stats(self.name)
        except FileNotFoundError:
            return {"cpu_nanoseconds": 0, "memory_usage": 0, "memory_limit": host_memory(),
                    "pids": 0, "block_read": 0, "block_write": 0}

    def freeze(self):
        """Stop every process of the group where it stands (``docker pause``)."""
        self.driver.freeze(self.name, True)

    def thaw(self):
        """Let a frozen group run again (``docker unpause``)."""
        self.driver.freeze(self.name, False)

    def destroy(self):
        """Kill whatever is left in the group and remove it; safe to repeat.

        The kernel refuses to remove a cgroup that still has processes
        (rmdir fails with EBUSY), so leftovers are killed first.  The group
        is frozen while they are killed so that none can fork a new one
        between our reading ``cgroup.procs`` and our signal; a frozen
        process still dies of SIGKILL once thawed.
        """
        if not self.exists():
            return
        if self.processes():
            self.kill_all()
        self.driver.remove(self.name)

    def kill_all(self, timeout=10.0):
        """SIGKILL every process of the group and wait until it is empty."""
        can_freeze = self.driver.can_freeze(self.name)
        deadline = time.monotonic() + timeout
        while pids := self.processes():
            if time.monotonic() > deadline:
                raise host.EngineError(
                    f"cannot empty cgroup {self.name}: processes {pids} survive SIGKILL")
            if can_freeze:
                self.freeze()
            for pid in pids:
                _kill(pid)
            if can_freeze:
                self.thaw()
            time.sleep(0.01)


def _kill(pid):
    try:
        host.call(CHAPTER, f"kill -KILL {pid}", os.kill, pid, _signal.SIGKILL)
    except ProcessLookupError:
        pass  # it exited on its own between the read and the kill: what we wanted


# -- the host's cgroup filesystems ---------------------------------------

class Hierarchy:
    """One mounted cgroup filesystem, as :func:`find_hierarchies` found it.

    ``version`` is 1 or 2, ``mount_point`` where it is mounted, and
    ``controllers`` the set of controllers it holds.
    """

    def __init__(self, version, mount_point, controllers):
        self.version, self.mount_point, self.controllers = version, mount_point, controllers

    def __repr__(self):
        return f"Hierarchy({self.version}, {self.mount_point!r}, {sorted(self.controllers)})"


def find_hierarchies(mountinfo="/proc/self/mountinfo"):
    """List the cgroup filesystems mounted on this host.

    proc(5) describes each line of mountinfo: the fifth field is the mount
    point, and after a lone ``-`` come the filesystem type, the source and
    the superblock options.  For a v1 hierarchy those options name its
    controllers (``rw,memory``); a v2 tree lists the controllers it offers
    in the ``cgroup.controllers`` file at its root.
    """
    known_v1 = _kernel_controllers()
    hierarchies, seen = [], set()
    with open(mountinfo) as lines:
        for line in lines:
            before, after = line.split(" - ", 1)
            fields = before.split()
            root, mount_point = fields[3], _unescape(fields[4])
            filesystem, _source, options = after.split()[:3]
            # A hierarchy mounted twice (or only a subtree of it) would
            # point us at the wrong directory; the first full mount wins.
            if root != "/" or filesystem not in ("cgroup", "cgroup2"):
                continue
            if filesystem == "cgroup":
                controllers = frozenset(options.split(",")) & known_v1
                version = 1
            else:
                controllers = frozenset(_read(os.path.join(mount_point, "cgroup.controllers")).split())
                version = 2
            key = (version, controllers if version == 1 else "unified")
            if key not in seen:
                seen.add(key)
                hierarchies.append(Hierarchy(version, mount_point, controllers))
    return hierarchies


def _kernel_controllers():
    """The controllers this kernel was built with and has enabled (/proc/cgroups)."""
    controllers = set()
    for line in _read("/proc/cgroups").splitlines():
        if line.startswith("#"):
            continue
        name, _hierarchy, _count, enabled = line.split()
        if enabled == "1":
            controllers.add(name)
    return frozenset(controllers)


def _unescape(path):
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    if "\\" not in path:
        return path
    import re

    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), path)


_driver = None


def host_driver():
    """Choose the driver for this host: v1 if any controller is mounted as v1.

    The choice is made once per process: the host's cgroup filesystems do
    not change under a running engine.
    """
    global _driver
    if _driver is not None:
        return _driver
    hierarchies = find_hierarchies()
    v1 = [hierarchy for hierarchy in hierarchies if hierarchy.version == 1 and hierarchy.controllers]
    unified = [hierarchy for hierarchy in hierarchies if hierarchy.version == 2]
    if not v1 and not unified:
        raise host.EngineError(
            "no cgroup filesystem is mounted (see /proc/self/mountinfo); "
            "mount one with: mount -t cgroup2 none /sys/fs/cgroup")
    _driver = V1Driver(v1) if v1 else V2Driver(unified[0])
    return _driver


# -- the v1 driver: one directory per hierarchy --------------------------

class V1Driver:
    """cgroup v1: each controller lives in its own hierarchy (or a few share one).

    A container's group is a directory of the same name in each hierarchy,
    and the process is written into the ``cgroup.procs`` of each.
    """

    version = 1

    #: Where a single-threaded process writes 0 to move itself (see Cgroup.join).
    own_thread_file = "tasks"

    def __init__(self, hierarchies):
        self.mount_points = {}
        for hierarchy in hierarchies:
            for controller in hierarchy.controllers:
                self.mount_points[controller] = hierarchy.mount_point

    def require(self, needed):
        """Refuse limits whose controller this host does not have."""
        for controller, flag in needed.items():
            if controller not in self.mount_points:
                raise host.EngineError(
                    f"{flag} needs the {controller} cgroup controller, which this host "
                    f"does not mount (see /proc/cgroups and /proc/self/mountinfo)")

    def directory(self, name, controller):
        """The group's directory in one controller's hierarchy, or None."""
        mount_point = self.mount_points.get(controller)
        return os.path.join(mount_point, name) if mount_point else None

    def directories(self, name):
        """One directory per hierarchy holding a controller we use."""
        found = []
        for controller in V1_CONTROLLERS:
            directory = self.directory(name, controller)
            if directory and directory not in found:
                found.append(directory)
        return found

    def make(self, name):
        """Create the group (and its parents) in every hierarchy."""
        for directory in self.directories(name):
            _make_directories(directory)
        cpuset = self.directory(name, "cpuset")
        if cpuset:
            self._fill_cpusets(cpuset)

    def _fill_cpusets(self, directory):
        # cgroup-v1/cpusets.rst: a new cpuset starts with empty cpus and
        # mems, and a task cannot be attached to it ("ENOSPC") until both
        # are set.  Each new level copies them from its parent.
        mount_point = self.mount_points["cpuset"]
        levels = os.path.relpath(directory, mount_point).split(os.sep)
        path = mount_point
        for level in levels:
            parent, path = path, os.path.join(path, level)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if not _read(os.path.join(path, knob)).strip():
                    _write(os.path.join(path, knob), _read(os.path.join(parent, knob)).strip())

    def apply(self, name, limits):
        """Write the limits into the group's files; return warnings."""
        warnings = []
        memory = self.directory(name, "memory")
        if limits.memory is not None:
            # The kernel keeps memory.limit_in_bytes <= memsw.limit_in_bytes
            # at every moment, so the memory limit goes first.
            _write(os.path.join(memory, "memory.limit_in_bytes"), str(limits.memory))
            memsw = os.path.join(memory, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                _write(memsw, str(limits.memory_and_swap()))
            elif limits.memory_swap is not None:
                raise host.EngineError(
                    "--memory-swap needs swap accounting, which this kernel has switched off "
                    "(no memory.memsw.limit_in_bytes; boot with swapaccount=1)")
            else:
                warnings.append("Your kernel does not support swap limit capabilities or the "
                                "cgroup is not mounted. Memory limited without swap.")
        cpu = self.directory(name, "cpu")
        if limits.cpus is not None:
            _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_MICROSECONDS))
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(cpu_quota(limits.cpus)))
        if limits.cpu_shares is not None:
            _write(os.path.join(cpu, "cpu.shares"), str(clamp_cpu_shares(limits.cpu_shares)))
        if limits.cpuset_cpus is not None:
            _write(os.path.join(self.directory(name, "cpuset"), "cpuset.cpus"), limits.cpuset_cpus)
        if limits.pids_limit is not None:
            _write(os.path.join(self.directory(name, "pids"), "pids.max"),
                   str(limits.pids_limit) if limits.pids_limit > 0 else "max")
        devices = self.directory(name, "devices")
        if devices:
            self._allow_devices(devices, limits.devices or [])
        elif limits.devices:
            raise host.EngineError("--device and --privileged need the devices cgroup "
                                   "controller, which this host does not mount")
        return warnings

    def _allow_devices(self, directory, extra_rules):
        # cgroup-v1/devices.rst: "echo a > /sys/fs/cgroup/1/devices.deny
        # will remove the 'a *:* rwm' entry" a new group inherits; then each
        # allowed device is added back.
        if extra_rules == ["a *:* rwm"]:
            _write(os.path.join(directory, "devices.allow"), "a")
            return
        _write(os.path.join(directory, "devices.deny"), "a")
        for rule in (*DEFAULT_DEVICE_RULES, *extra_rules):
            _write(os.path.join(directory, "devices.allow"), rule)

    def oom_kills(self, name):
        """How many processes of the group the OOM killer has killed."""
        memory = self.directory(name, "memory")
        if not memory or not os.path.isdir(memory):
            return 0
        control = _keyed(os.path.join(memory, "memory.oom_control"))
        if "oom_kill" in control:
            return control["oom_kill"]
        # Kernels before 4.13 (CentOS 7) have no oom_kill counter; the
        # number of times the limit was hit is the nearest sign there.
        return int(_read(os.path.join(memory, "memory.failcnt")))

    def stats(self, name):
        """Read CPU, memory, pids and block I/O counters of the group."""
        result = {"cpu_nanoseconds": 0, "memory_usage": 0, "memory_limit": host_memory(),
                  "pids": 0, "block_read": 0, "block_write": 0}
        cpuacct = self.directory(name, "cpuacct")
        if cpuacct and os.path.isdir(cpuacct):
            result["cpu_nanoseconds"] = int(_read(os.path.join(cpuacct, "cpuacct.usage")))
        memory = self.directory(name, "memory")
        if memory and os.path.isdir(memory):
            usage = int(_read(os.path.join(memory, "memory.usage_in_bytes")))
            inactive = _keyed(os.path.join(memory, "memory.stat")).get("total_inactive_file", 0)
            result["memory_usage"] = usage - inactive if inactive < usage else usage
            result["memory_limit"] = min(
                int(_read(os.path.join(memory, "memory.limit_in_bytes"))), host_memory())
        pids = self.directory(name, "pids")
        if pids and os.path.isdir(pids):
            result["pids"] = int(_read(os.path.join(pids, "pids.current")))
        blkio = self.directory(name, "blkio")
        if blkio and os.path.isdir(blkio):
            counters = os.path.join(blkio, "blkio.throttle.io_service_bytes_recursive")
            for line in _read(counters).splitlines():
                words = line.split()
                if len(words) == 3 and words[1] in ("Read", "Write"):
                    result["block_" + words[1].lower()] += int(words[2])
        return result

    def can_freeze(self, name):
        """Say whether this host has the freezer controller."""
        return "freezer" in self.mount_points

    def freeze(self, name, frozen):
        """Freeze or thaw the group and wait until the kernel says it is done."""
        self.require({"freezer": "pause"})
        state = os.path.join(self.directory(name, "freezer"), "freezer.state")
        wanted = "FROZEN" if frozen else "THAWED"
        _write(state, wanted)
        # cgroup-v1/freezer-subsystem.rst: the state reads FREEZING until
        # every task has stopped.
        _wait_for(lambda: _read(state).strip() == wanted, f"{state} to read {wanted}")

    def remove(self, name):
        """Remove the group's directories, and its parents once they are empty."""
        for mount_point in dict.fromkeys(self.mount_points[controller]
                                         for controller in V1_CONTROLLERS
                                         if controller in self.mount_points):
            _remove_group(mount_point, name)


# -- the v2 driver: one unified tree -------------------------------------

class V2Driver:
    """cgroup v2: one tree, controllers switched on level by level.

    cgroup-v2.rst: "a controller is enabled for the children of a cgroup
    by writing ``+controller`` to its ``cgroup.subtree_control``", and only
    controllers the parent has enabled appear in a child.  It also forbids
    processes in a cgroup that hands controllers to its children ("no
    internal processes"), which is why containers live one level below
    ``minidocker``, a group that never holds a process itself.
    """

    version = 2

    #: v2 moves threads only inside threaded subtrees; a process moves whole.
    own_thread_file = "cgroup.procs"

    def __init__(self, hierarchy):
        self.mount_point = hierarchy.mount_point
        self.controllers = hierarchy.controllers

    def require(self, needed):
        """Refuse limits whose controller this host's tree does not offer."""
        for controller, flag in needed.items():
            if controller not in self.controllers:
                raise host.EngineError(
                    f"{flag} needs the {controller} cgroup controller, which this host's "
                    f"cgroup2 tree does not offer (see {self.mount_point}/cgroup.controllers)")

    def directories(self, name):
        """The group's single directory."""
        return [os.path.join(self.mount_point, name)]

    def make(self, name):
        """Create the group, switching our controllers on at every level above it."""
        path = self.mount_point
        for level in name.split("/"):
            wanted = [controller for controller in V2_CONTROLLERS
                      if controller in _read(os.path.join(path, "cgroup.controllers")).split()]
            enabled = _read(os.path.join(path, "cgroup.subtree_control")).split()
            missing = [controller for controller in wanted if controller not in enabled]
            if missing:
                _write(os.path.join(path, "cgroup.subtree_control"),
                       " ".join("+" + controller for controller in missing))
            path = os.path.join(path, level)
            if not os.path.isdir(path):
                host.call(CHAPTER, f"mkdir {path}", os.mkdir, path)

    def apply(self, name, limits):
        """Write the limits into the group's files; return warnings."""
        warnings = []
        directory = os.path.join(self.mount_point, name)
        if limits.memory is not None:
            _write(os.path.join(directory, "memory.max"), str(limits.memory))
            swap = os.path.join(directory, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, swap_only(limits.memory, limits.memory_and_swap()))
            elif limits.memory_swap is not None:
                raise host.EngineError(
                    "--memory-swap needs swap accounting, which this kernel lacks "
                    "(no memory.swap.max)")
            else:
                warnings.append("Your kernel does not support swap limit capabilities or the "
                                "cgroup is not mounted. Memory limited without swap.")
        if limits.cpus is not None:
            _write(os.path.join(directory, "cpu.max"),
                   f"{cpu_quota(limits.cpus)} {CPU_PERIOD_MICROSECONDS}")
        if limits.cpu_shares is not None:
            _write(os.path.join(directory, "cpu.weight"), str(cpu_weight(limits.cpu_shares)))
        if limits.cpuset_cpus is not None:
            _write(os.path.join(directory, "cpuset.cpus"), limits.cpuset_cpus)
        if limits.pids_limit is not None:
            _write(os.path.join(directory, "pids.max"),
                   str(limits.pids_limit) if limits.pids_limit > 0 else "max")
        if limits.devices and limits.devices != ["a *:* rwm"]:
            warnings.append(
                "cgroup v2 has no devices files: device access is checked by a BPF program "
                "(BPF_CGROUP_DEVICE) that minidocker cannot load without ctypes, so --device "
                "adds the node but no device access is restricted on this host")
        return warnings

    def oom_kills(self, name):
        """How many processes of the group the OOM killer has killed."""
        events = os.path.join(self.mount_point, name, "memory.events")
        if not os.path.exists(events):
            return 0
        return _keyed(events).get("oom_kill", 0)

    def stats(self, name):
        """Read CPU, memory, pids and block I/O counters of the group."""
        directory = os.path.join(self.mount_point, name)
        result = {"cpu_nanoseconds": 0, "memory_usage": 0, "memory_limit": host_memory(),
                  "pids": 0, "block_read": 0, "block_write": 0}
        if not os.path.isdir(directory):
            return result
        cpu = _keyed(os.path.join(directory, "cpu.stat"))
        result["cpu_nanoseconds"] = cpu.get("usage_usec", 0) * 1000
        if os.path.exists(os.path.join(directory, "memory.current")):
            usage = int(_read(os.path.join(directory, "memory.current")))
            inactive = _keyed(os.path.join(directory, "memory.stat")).get("inactive_file", 0)
            result["memory_usage"] = usage - inactive if inactive < usage else usage
            limit = _read(os.path.join(directory, "memory.max")).strip()
            if limit != "max":
                result["memory_limit"] = min(int(limit), host_memory())
        if os.path.exists(os.path.join(directory, "pids.current")):
            result["pids"] = int(_read(os.path.join(directory, "pids.current")))
        if os.path.exists(os.path.join(directory, "io.stat")):
            for line in _read(os.path.join(directory, "io.stat")).splitlines():
                fields = dict(word.split("=", 1) for word in line.split()[1:])
                result["block_read"] += int(fields.get("rbytes", 0))
                result["block_write"] += int(fields.get("wbytes", 0))
        return result

    def can_freeze(self, name):
        """Say whether the group has ``cgroup.freeze`` (Linux 5.2 and later)."""
        return os.path.exists(os.path.join(self.mount_point, name, "cgroup.freeze"))

    def freeze(self, name, frozen):
        """Freeze or thaw the group and wait until ``cgroup.events`` agrees."""
        directory = os.path.join(self.mount_point, name)
        if not os.path.exists(os.path.join(directory, "cgroup.freeze")):
            raise host.EngineError("pause needs cgroup.freeze, which this kernel lacks (Linux < 5.2)")
        _write(os.path.join(directory, "cgroup.freeze"), "1" if frozen else "0")
        events = os.path.join(directory, "cgroup.events")
        wanted = 1 if frozen else 0
        _wait_for(lambda: _keyed(events).get("frozen") == wanted, f"{events} to say frozen {wanted}")

    def remove(self, name):
        """Remove the group's directory, and its parents once they are empty."""
        _remove_group(self.mount_point, name)


# -- unit conversions ----------------------------------------------------

def cpu_quota(cpus):
    """The CFS quota (microseconds per period) that gives ``cpus`` CPUs."""
    return round(cpus * CPU_PERIOD_MICROSECONDS)


def clamp_cpu_shares(shares):
    """Keep shares within the kernel's bounds, as the kernel itself would."""
    return min(max(shares, MINIMUM_CPU_SHARES), MAXIMUM_CPU_SHARES)


def cpu_weight(shares):
    """Convert v1 ``cpu.shares`` (2-262144) to v2 ``cpu.weight`` (1-10000).

    This is runc's linear map: 2 becomes 1, 262144 becomes 10000, and
    Docker's default 1024 becomes 39.
    """
    shares = clamp_cpu_shares(shares)
    return 1 + (shares - 2) * 9999 // 262142


def swap_only(memory, memory_and_swap):
    """v2 limits swap alone, where v1 (and Docker's flag) limit memory+swap."""
    if memory_and_swap == -1:
        return "max"
    return str(memory_and_swap - memory)


def host_memory():
    """The host's total memory in bytes: the limit of an unlimited group."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# -- reading and writing the kernel's files ------------------------------

def _read(path):
    with open(path) as kernel_file:
        return kernel_file.read()


def _keyed(path):
    """Read a flat-keyed file (``key value`` per line) into a dict of ints."""
    values = {}
    for line in _read(path).splitlines():
        words = line.split()
        if len(words) == 2 and words[1].lstrip("-").isdigit():
            values[words[0]] = int(words[1])
    return values


def _write(path, value):
    """Write one knob; the kernel's refusal becomes a one-line engine error."""
    try:
        host.write(path, value, CHAPTER)
    except FileNotFoundError:
        raise  # the group vanished under us (create retries) or lacks the knob
    except OSError as error:
        raise host.EngineError(
            f"the kernel refused {value!r} for {path}: {error.strerror}") from error


def _make_directories(directory):
    """mkdir -p, narrated level by level."""
    parent = os.path.dirname(directory)
    if not os.path.isdir(parent):
        _make_directories(parent)
    if not os.path.isdir(directory):
        try:
            host.call(CHAPTER, f"mkdir {directory}", os.mkdir, directory)
        except FileExistsError:
            pass  # a parallel container made the shared parent first


def _remove_group(mount_point, name):
    """Remove the group ``name`` below ``mount_point``, then its empty parents.

    A cgroup directory is removed with rmdir alone (its knob files go with
    it), which the kernel allows once no process and no child group is left
    in it; otherwise rmdir fails with EBUSY.
    """
    directory = os.path.join(mount_point, name)
    _remove_empty_group(directory)
    parent = os.path.dirname(directory)
    while parent != os.path.normpath(mount_point):
        try:
            host.call(CHAPTER, f"rmdir {parent}", os.rmdir, parent)
        except OSError as error:
            # EBUSY: another container's group still lives in this parent.
            # ENOENT: a parallel destroy removed it first.  Either way the
            # parent is not ours to remove now.
            if error.errno in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT):
                return
            raise
        parent = os.path.dirname(parent)


def _remove_empty_group(directory, attempts=50):
    # Right after its last process has exited a group can count as
    # populated for a moment longer; rmdir then says EBUSY and a retry
    # a little later succeeds.
    for attempt in range(attempts):
        try:
            host.call(CHAPTER, f"rmdir {directory}", os.rmdir, directory)
            return
        except FileNotFoundError:
            return  # a parallel destroy removed it first
        except OSError as error:
            if error.errno != errno.EBUSY or attempt == attempts - 1:
                raise host.EngineError(f"cannot remove cgroup {directory}: {error.strerror}")
            time.sleep(0.02)


def _wait_for(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise host.EngineError(f"timed out waiting for {what}")
        time.sleep(0.005)
