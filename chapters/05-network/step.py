"""Chapter 5, try it: wire two network namespaces to a bridge and let them talk.

Run as root from the repository's top directory::

    python chapters/05-network/step.py           # what happens
    python chapters/05-network/step.py --trace   # and every ip/iptables command

The step uses only chapter 5's module (``minidocker.network``) and the host
door.  Its two "containers" are plain ``sleep`` processes, each started in a
network namespace of its own (``unshare --net``), with no root filesystem:
networking needs nothing else.  The step makes a network in a throwaway
engine root, connects both processes, pings one from the other, shows the
hosts file each got and the rules the engine added, then disconnects them.
The bridge outlives its last container, as Docker's docker0 does; removing
the network takes it down, and the step checks that nothing is left.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from minidocker import host, network  # noqa: E402  (after the path line above)


def start_in_own_network_namespace():
    """Start ``sleep`` in a new network namespace; wait until it is there."""
    process = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    mine = os.readlink("/proc/self/ns/net")
    while os.readlink(f"/proc/{process.pid}/ns/net") == mine:
        time.sleep(0.01)  # unshare has not switched namespaces yet
    return process


def give_eth0_its_address(process, settings):
    """Set the box's eth0 up with its address and route, from inside its namespace.

    A container's PID 1 does this for itself (``network.configure_eth0``);
    the box is a plain ``sleep``, so a forked child joins its network
    namespace (setns(2)) and does it on its behalf.
    """
    child = os.fork()
    if child == 0:
        code = 1
        try:
            with open(f"/proc/{process.pid}/ns/net") as namespace:
                os.setns(namespace.fileno(), os.CLONE_NEWNET)
            network.configure_eth0(settings["IPAddress"], settings["IPPrefixLen"],
                                   settings["Gateway"])
            code = 0
        except Exception as error:
            print(f"eth0 inside {process.pid}: {error}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    if status:
        raise SystemExit("could not configure eth0 inside the box")


def inside(process, *argv):
    """Run a host tool inside ``process``'s network namespace; return its output."""
    return subprocess.run(["nsenter", f"--net=/proc/{process.pid}/ns/net", *argv],
                          capture_output=True, text=True).stdout


def main():
    if "--trace" in sys.argv:
        host.enable_trace()
    root = tempfile.mkdtemp(prefix="minidocker-chapter5-")
    os.environ["MINIDOCKER_ROOT"] = root
    boxes, ids, created = [], [], False
    try:
        network.create_network("chapter5")
        created = True
        for name in ("alpha", "beta"):
            box = start_in_own_network_namespace()
            directory = os.path.join(root, name)
            os.mkdir(directory)
            container_id = os.urandom(32).hex()
            settings = network.connect(container_id, box.pid, {
                "network": "chapter5", "name": name, "hostname": name, "directory": directory})
            give_eth0_its_address(box, settings)
            boxes.append(box)
            ids.append((container_id, settings))
            print(f"{name}: eth0 {settings['IPAddress']}/{settings['IPPrefixLen']}, "
                  f"gateway {settings['Gateway']}, MAC {settings['MacAddress']}")
        print("bridge:", ids[0][1]["Bridge"])
        beta_address = ids[1][1]["IPAddress"]
        reply = inside(boxes[0], "busybox", "ping", "-c", "1", "-W", "2", beta_address)
        print("alpha pings beta:", "answered" if " 0% packet loss" in reply else "no answer")
        with open(os.path.join(root, "alpha", "hosts")) as hosts:
            print("alpha's /etc/hosts:")
            print("".join(f"    {line}" for line in hosts), end="")
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        ours = [line for line in rules.splitlines() if ids[0][1]["Bridge"] in line]
        print(f"rules that name the bridge: {len(ours)}")
    finally:
        for box in boxes:
            box.kill()
            box.wait()
        for container_id, settings in ids:
            network.disconnect(container_id, settings)
        bridge = ids[0][1]["Bridge"] if ids else None
        still_up = os.path.exists(f"/sys/class/net/{bridge}")
        if created:
            network.remove_network("chapter5")
        shutil.rmtree(root)
    print("after disconnect, bridge still up:", still_up)
    print("after network rm, bridge gone:", not os.path.exists(f"/sys/class/net/{bridge}"))


if __name__ == "__main__":
    main()
