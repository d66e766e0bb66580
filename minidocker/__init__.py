"""minidocker: a Docker-like container engine in plain Python, written to be read.

One module per concept, in the order a student meets them: namespace (1),
cgroup (2), rootfs (3), image and registry (4), network (5), logs (6),
commit (7).  ``host`` is the single door to the kernel; ``container``
composes the chapters into a lifecycle and ``cli`` speaks Docker's language.
"""

__version__ = "0.1.0"
