"""Chapter 5: networking, tested on the real kernel.

Every packet these tests send stays on this machine: between network
namespaces the tests (or the engine) create, or on loopback.  The "other
host" of the NAT and DNAT tests is a network namespace of our own, joined
to the host by a veth pair and given no route beyond this machine.
"""

import concurrent.futures
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from minidocker import network

pytestmark = pytest.mark.ch5

PAGE = "hello from minidocker"


# -- helpers ---------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def restore_forwarding():
    """The engine turns net.ipv4.ip_forward on, as Docker does; put it back after."""
    with open(network.FORWARDING) as setting:
        before = setting.read().strip()
    yield
    with open(network.FORWARDING, "w") as setting:
        setting.write(before)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fetch(url, attempts=30):
    """GET ``url`` without any proxy (the traffic must stay on this machine)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(attempts):
        try:
            with opener.open(url, timeout=1) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.1)  # httpd may still be starting
    raise AssertionError(f"nothing answered at {url}")


def settings_of(engine, container_id):
    return json.loads(engine.ok("inspect", container_id))[0]["NetworkSettings"]


def host_links():
    output = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(": ")[1].split("@")[0] for line in output.splitlines()}


def minidocker_rules():
    dump = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [line for line in dump.splitlines() if "minidocker" in line.lower()]


def bridges_of(engine):
    """The bridge names of this engine root's networks (their records, not the host)."""
    names = [line.split()[1] for line in engine.ok("network", "ls").splitlines()[1:]]
    records = json.loads(engine.ok("network", "inspect", *names))
    return {record["Name"]: record["Options"]["com.docker.network.bridge.name"]
            for record in records if record["Driver"] == "bridge"}


def assert_nothing_left(engine, container_ids=(), bridges_stay=True):
    """Check this engine root left no veth, container rule or allocation behind.

    A network's bridge and its own rules outlive its containers (they go
    with ``network rm`` or ``system reset``); with ``bridges_stay=False``,
    for a command that never got as far as a network, they must not exist
    either.  Only this root's objects are looked for: other engine roots
    may be busy on the same host (the session's leak check looks at
    everything).
    """
    names = [line.split()[1] for line in engine.ok("network", "ls").splitlines()[1:]]
    records = json.loads(engine.ok("network", "inspect", *names))
    bridges = [] if bridges_stay else list(bridges_of(engine).values())
    veths = [network.host_interface_name(container_id) for container_id in container_ids]
    assert not set(bridges + veths) & host_links()
    marks = bridges + [container_id[:12] for container_id in container_ids]
    assert [line for line in minidocker_rules() if any(mark in line for mark in marks)] == []
    assert all(record["Containers"] == {} for record in records)


def rules_of(bridge):
    """The rules that carry the comment of the network whose bridge is ``bridge``."""
    return [line for line in minidocker_rules() if f"minidocker network {bridge}" in line]


def gateway_of(engine, name):
    record = json.loads(engine.ok("network", "inspect", name))[0]
    return record["IPAM"]["Config"][0]["Gateway"]


def run_detached(engine, *arguments):
    return engine.ok("run", "-d", *arguments).strip()


@pytest.fixture
def other_host(tmp_path):
    """A network namespace standing for another machine, linked to the host by a veth.

    It gets a /30 that overlaps no route here; its only route is that /30,
    so nothing it sends can leave this machine.  Yields (name, host side
    address, its own address).
    """
    taken = [subnet for subnet, _ in network.host_routes()]
    subnet = next(candidate for candidate in ipaddress.ip_network("198.18.0.0/24").subnets(new_prefix=30)
                  if not any(candidate.overlaps(other) for other in taken))
    near, far = list(subnet.hosts())
    name = f"md-test-{os.getpid()}"
    outside, inside = f"mdt{os.getpid() % 100000}h", f"mdt{os.getpid() % 100000}n"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", name],
        ["ip", "addr", "add", f"{near}/30", "dev", outside],
        ["ip", "link", "set", outside, "up"],
        ["ip", "-n", name, "addr", "add", f"{far}/30", "dev", inside],
        ["ip", "-n", name, "link", "set", inside, "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield name, str(near), str(far)
    finally:
        subprocess.run(["ip", "link", "delete", outside], capture_output=True)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def listen_once(namespace, port):
    """Start a one-connection TCP listener inside ``namespace``; it prints the peer's address."""
    script = ("import socket,sys\n"
              "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              f"s.bind(('0.0.0.0', {port})); s.listen(1); print('listening', flush=True)\n"
              "s.settimeout(20); c, peer = s.accept(); c.recv(100); print(peer[0], flush=True)\n")
    listener = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", script],
                                stdout=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "listening"
    return listener


# -- two containers, one network ---------------------------------------------

def test_containers_on_one_network_reach_each_other_by_address_and_name(busybox):
    busybox.ok("network", "create", "front")
    server = run_detached(busybox, "--network", "front", "--name", "alpha",
                          "--network-alias", "db", "busybox", "sleep", "30")
    address = settings_of(busybox, server)["Networks"]["front"]["IPAddress"]
    for target in (address, "alpha", "db"):
        result = busybox.run("run", "--rm", "--network", "front", "busybox",
                             "ping", "-c", "1", "-W", "2", target)
        assert result.returncode == 0, (target, result.stdout, result.stderr)
        assert f"from {address}" in result.stdout


def test_hosts_files_follow_containers_as_they_come_and_go(busybox):
    busybox.ok("network", "create", "team")
    first = run_detached(busybox, "--network", "team", "--name", "first", "busybox", "sleep", "30")
    second = run_detached(busybox, "--network", "team", "--name", "second", "busybox", "sleep", "30")
    address = settings_of(busybox, second)["IPAddress"]
    hosts = busybox.ok("exec", first, "cat", "/etc/hosts")
    assert f"{address}\t" in hosts and "second" in hosts
    assert "first" in hosts.splitlines()[2]  # its own name, right after localhost
    busybox.ok("rm", "-f", second)
    hosts = busybox.ok("exec", first, "cat", "/etc/hosts")
    assert "second" not in hosts and address not in hosts


def test_the_default_network_gives_no_names_of_others(busybox):
    other = run_detached(busybox, "--name", "loner", "busybox", "sleep", "30")
    hosts = busybox.ok("run", "--rm", "busybox", "cat", "/etc/hosts")
    assert "loner" not in hosts and settings_of(busybox, other)["IPAddress"] not in hosts


def test_networks_are_isolated_from_each_other(busybox):
    busybox.ok("network", "create", "red")
    busybox.ok("network", "create", "blue")
    red = run_detached(busybox, "--network", "red", "busybox", "sleep", "30")
    red_address = settings_of(busybox, red)["IPAddress"]
    same = busybox.run("run", "--rm", "--network", "red", "busybox",
                       "ping", "-c", "1", "-W", "1", red_address)
    assert same.returncode == 0, same.stdout + same.stderr
    across = busybox.run("run", "--rm", "--network", "blue", "busybox",
                         "ping", "-c", "1", "-W", "1", red_address)
    assert across.returncode != 0
    assert "0 packets received" in across.stdout


# -- published ports ------------------------------------------------------

def test_a_port_published_on_loopback_is_reachable_from_the_host(busybox):
    port = free_port()
    server = run_detached(busybox, "-p", f"127.0.0.1:{port}:80", "busybox",
                          "httpd", "-f", "-p", "80", "-h", "/var/www")
    assert fetch(f"http://127.0.0.1:{port}/").strip() == PAGE
    ports = settings_of(busybox, server)["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    listing = busybox.ok("ps")
    assert f"127.0.0.1:{port}->80/tcp" in listing


def test_a_port_published_on_all_addresses_answers_at_the_gateway(busybox):
    port = free_port()
    server = run_detached(busybox, "-p", f"{port}:80", "busybox",
                          "httpd", "-f", "-p", "80", "-h", "/var/www")
    gateway = settings_of(busybox, server)["Gateway"]
    assert fetch(f"http://{gateway}:{port}/").strip() == PAGE


def test_a_published_port_is_reachable_from_another_host(busybox, other_host):
    namespace, host_address, _ = other_host
    port = free_port()
    run_detached(busybox, "-p", f"{port}:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/var/www")
    # The host's fetch() helper, run by a Python inside the other host's namespace.
    script = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
              f"import test_network; print(test_network.fetch('http://{host_address}:{port}/'))")
    result = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == PAGE, result.stderr


def test_an_empty_host_port_gets_one_from_the_kernel(busybox):
    port = free_port()
    server = run_detached(busybox, "-p", f"127.0.0.1:{port}:80", "-p", "127.0.0.1::81/udp",
                          "busybox", "sleep", "30")
    ports = settings_of(busybox, server)["Ports"]
    assert ports["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert int(ports["81/udp"][0]["HostPort"]) > 0


def test_publish_all_adds_each_exposed_port_not_published_already():
    ports = network.requested_ports({"publish": ["8080:80"], "publish_all": True,
                                     "exposed_ports": ["80/tcp", "53/udp", "9000"]})
    assert [(p["HostPort"], p["ContainerPort"], p["Protocol"]) for p in ports] == [
        ("8080", "80", "tcp"), ("", "53", "udp"), ("", "9000", "tcp")]


# -- outbound NAT -----------------------------------------------------------

def test_outbound_traffic_leaves_with_the_hosts_address(busybox, other_host):
    namespace, host_address, far_address = other_host
    listener = listen_once(namespace, 9000)
    try:
        result = busybox.run("run", "--rm", "busybox", "sh", "-c",
                             f"echo hello | nc -w 2 {far_address} 9000")
        assert result.returncode == 0, result.stderr
        seen = listener.stdout.readline().strip()
    finally:
        listener.kill()
        listener.wait()
    assert seen == host_address  # MASQUERADE: the container's own address never left


# -- none and host ---------------------------------------------------------------

def test_network_none_has_only_loopback(busybox):
    output = busybox.ok("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    names = [line.split(": ")[1].split("@")[0] for line in output.splitlines()]
    assert names == ["lo"]
    assert settings_of(busybox, run_detached(busybox, "--network", "none", "busybox",
                                             "sleep", "30"))["IPAddress"] == ""


def test_network_host_sees_the_hosts_links(busybox):
    output = busybox.ok("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link")
    names = {line.split(": ")[1].split("@")[0] for line in output.splitlines()}
    assert names == {name for name in host_links() if not name.startswith("md")} | \
        {name for name in names if name.startswith("md")}
    assert len(names) > 1


# -- addresses ----------------------------------------------------------------------

def test_twenty_parallel_runs_get_twenty_addresses_and_give_them_back(busybox):
    def start(_):
        return run_detached(busybox, "busybox", "sleep", "60")

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(start, range(20)))
    addresses = {settings_of(busybox, container_id)["IPAddress"] for container_id in ids}
    assert len(addresses) == 20
    assert all(ipaddress.ip_address(address).is_private for address in addresses)
    busybox.ok("rm", "-f", *ids, timeout=120)
    assert_nothing_left(busybox, ids)


def test_ip_can_be_chosen_on_a_user_network(busybox):
    busybox.ok("network", "create", "--subnet", "10.123.45.0/24", "fixed")
    chosen = run_detached(busybox, "--network", "fixed", "--ip", "10.123.45.77",
                          "busybox", "sleep", "30")
    assert settings_of(busybox, chosen)["IPAddress"] == "10.123.45.77"
    assert "inet 10.123.45.77/24" in busybox.ok("exec", chosen, "ip", "addr", "show", "eth0")
    taken = busybox.run("run", "--rm", "--network", "fixed", "--ip", "10.123.45.77",
                        "busybox", "true")
    assert taken.returncode == 125
    assert "already in use" in taken.stderr


def test_removal_leaves_no_veth_rule_or_allocation(busybox):
    port = free_port()
    container_id = run_detached(busybox, "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "30")
    assert network.host_interface_name(container_id) in host_links()
    assert any(container_id[:12] in line for line in minidocker_rules())
    busybox.ok("rm", "-f", container_id)
    assert_nothing_left(busybox, [container_id])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the reservation is gone too
    assert bridges_of(busybox)["bridge"] in host_links()  # the network lives on


# -- the bridge's lifetime: as long as its network's ------------------------------

def test_the_bridge_outlives_its_last_container_and_serves_the_next(busybox):
    port = free_port()
    short_id = busybox.ok("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox",
                          "hostname").strip()  # the default hostname is the short id
    bridge = bridges_of(busybox)["bridge"]
    assert bridge in host_links()
    assert len(rules_of(bridge)) == 2  # its ACCEPT inside the bridge and its MASQUERADE
    assert any(line.startswith(":MINIDOCKER-FORWARD") for line in minidocker_rules())
    # The kernel would let an idle bridge fall back to 1500; the engine's MTU holds.
    with open(f"/sys/class/net/{bridge}/mtu") as mtu:
        assert int(mtu.read()) == network.uplink_mtu()
    # The container's own pieces went with it.
    assert network.host_interface_name(short_id) not in host_links()
    assert [line for line in minidocker_rules() if short_id in line] == []
    gateway = gateway_of(busybox, "bridge")
    again = busybox.run("--trace", "run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", gateway)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 packets received" in again.stdout
    assert f"link add {bridge}" not in again.stderr
    assert "iptables-restore" not in again.stderr
    assert "iptables --version" not in again.stderr and "-S FORWARD" not in again.stderr
    assert f"master {bridge}" in again.stderr  # the same bridge, reused
    assert bridges_of(busybox)["bridge"] == bridge


def test_a_bridge_deleted_behind_the_engines_back_is_made_again(busybox):
    busybox.ok("run", "--rm", "busybox", "true")
    bridge = bridges_of(busybox)["bridge"]
    gateway = gateway_of(busybox, "bridge")
    subprocess.run(["ip", "link", "delete", bridge], check=True)
    result = busybox.run("run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", gateway)
    assert result.returncode == 0, result.stdout + result.stderr
    assert bridge in host_links()
    assert len(rules_of(bridge)) == 2  # its rules were still there: replaced, not doubled
    # Its rules flushed by someone else: the next run puts them back.
    network.remove_rules_marked(f"minidocker network {bridge}")
    assert rules_of(bridge) == []
    result = busybox.run("run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", gateway)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules_of(bridge)) == 2


def test_network_rm_and_prune_remove_the_bridge_and_its_rules(busybox):
    for name in ("lab", "idle", "bridge"):
        if name != "bridge":
            busybox.ok("network", "create", name)
        busybox.ok("run", "--rm", "--network", name, "busybox", "true")
    bridges = bridges_of(busybox)
    assert {bridges["lab"], bridges["idle"]} <= host_links()
    assert rules_of(bridges["lab"]) and rules_of(bridges["idle"])
    assert busybox.ok("network", "rm", "lab").strip() == "lab"
    assert bridges["lab"] not in host_links() and rules_of(bridges["lab"]) == []
    assert bridges["idle"] in host_links()
    assert busybox.ok("network", "prune", "-f").split() == ["Deleted", "Networks:", "idle"]
    assert bridges["idle"] not in host_links() and rules_of(bridges["idle"]) == []
    assert bridges["bridge"] in host_links()  # the default network is never pruned


def test_system_reset_force_leaves_nothing_of_this_engine(busybox):
    busybox.ok("network", "create", "team")
    busybox.ok("volume", "create", "data")
    port = free_port()
    running = run_detached(busybox, "--network", "team", "-p", f"127.0.0.1:{port}:80",
                           "-v", "data:/data", "busybox", "sleep", "30")
    busybox.ok("run", "--rm", "busybox", "true")
    bridges = list(bridges_of(busybox).values())
    assert len(bridges) == 2 and set(bridges) <= host_links()
    assert busybox.ok("system", "reset", "--force") == ""
    assert os.listdir(busybox.root) == []
    assert not set(bridges + [network.host_interface_name(running)]) & host_links()
    marks = bridges + [running[:12]]
    assert [line for line in minidocker_rules() if any(mark in line for mark in marks)] == []
    if not [name for name in host_links() if name.startswith(network.BRIDGE_PREFIX)]:
        assert minidocker_rules() == []  # no engine's bridge is left: no chain either
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))
    assert busybox.ok("ps", "-aq") == "" and busybox.ok("volume", "ls", "-q") == ""


def test_system_reset_removes_only_what_the_engine_made(busybox):
    # A --root pointed at the wrong directory must not cost its owner a file.
    with open(os.path.join(busybox.root, "notes.txt"), "w") as handle:
        handle.write("mine\n")
    os.mkdir(os.path.join(busybox.root, "photos"))
    busybox.ok("create", "busybox", "true")
    result = busybox.run("system", "reset", "--force")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"minidocker: kept what is not the engine's in {busybox.root}: "
                             "notes.txt, photos\n")
    assert sorted(os.listdir(busybox.root)) == ["notes.txt", "photos"]
    with open(os.path.join(busybox.root, "notes.txt")) as handle:
        assert handle.read() == "mine\n"


def test_system_reset_asks_first_and_no_removes_nothing(busybox):
    kept = busybox.ok("create", "--name", "kept", "busybox", "true").strip()
    busybox.ok("run", "--rm", "busybox", "true")
    bridge = bridges_of(busybox)["bridge"]
    for answer, status in (("n\n", 0), ("\n", 0), ("", 1)):
        result = busybox.run("system", "reset", input=answer)
        assert result.returncode == status, result.stderr
        assert "WARNING! This will remove:" in result.stdout
        assert busybox.root in result.stdout
        assert result.stdout.endswith("Are you sure you want to continue? [y/N] ")
        assert busybox.ok("ps", "-aq", "--no-trunc").split() == [kept]
        assert bridge in host_links() and len(rules_of(bridge)) == 2
        assert "busybox" in busybox.ok("images")
    result = busybox.run("system", "reset", input="y\n")
    assert result.returncode == 0, result.stderr
    assert os.listdir(busybox.root) == [] and bridge not in host_links()


def test_a_killed_monitor_is_cleaned_up_by_rm(busybox):
    port = free_port()
    container_id = run_detached(busybox, "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "30")
    state_path = os.path.join(busybox.root, "containers", container_id, "state.json")
    with open(state_path) as handle:
        monitor = json.load(handle)["MonitorPid"]
    os.kill(monitor, 9)
    busybox.ok("rm", "-f", container_id)
    assert_nothing_left(busybox, [container_id])


# -- names and resolvers ---------------------------------------------------------

def test_add_host_and_dns_are_written(busybox):
    output = busybox.ok("run", "--rm", "--add-host", "registry.local:10.9.8.7",
                        "--add-host", "me:host-gateway", "--dns", "10.0.0.53", "busybox",
                        "cat", "/etc/hosts", "/etc/resolv.conf")
    assert "10.9.8.7\tregistry.local" in output
    assert "nameserver 10.0.0.53" in output
    gateway_line = next(line for line in output.splitlines() if line.endswith("\tme"))
    assert ipaddress.ip_address(gateway_line.split("\t")[0]).is_private


# -- network commands ------------------------------------------------------------

def test_network_create_ls_inspect_rm(busybox):
    busybox.ok("network", "create", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.254", "lab")
    listing = busybox.ok("network", "ls")
    assert [line.split()[1] for line in listing.splitlines()[1:]] == ["bridge", "host", "none", "lab"]
    record = json.loads(busybox.ok("network", "inspect", "lab"))[0]
    assert record["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.254"}]
    user = run_detached(busybox, "--network", "lab", "--name", "user", "busybox", "sleep", "30")
    assert settings_of(busybox, user)["Gateway"] == "10.77.0.254"
    refused = busybox.run("network", "rm", "lab")
    assert refused.returncode != 0 and "active endpoints" in refused.stderr
    busybox.ok("rm", "-f", user)
    assert busybox.ok("network", "rm", "lab").strip() == "lab"
    assert "lab" not in busybox.ok("network", "ls")


# -- bad input: one line, exit 125, nothing left behind -------------------------

def route_subnet():
    return str(network.host_routes()[0][0])


@pytest.mark.parametrize("arguments, complaint", [
    (["network", "create", "--subnet", "ROUTE", "clash"], "overlaps the host route"),
    (["network", "create", "--subnet", "10.0.0.0/33", "bad"], "invalid subnet"),
    (["run", "-p", "80:70000", "busybox", "true"], "not a port number"),
    (["run", "-p", "1.2.3:80:80", "busybox", "true"], "invalid port spec"),
    (["run", "-p", "80/sctp", "busybox", "true"], "protocol must be tcp or udp"),
    (["run", "--network", "nowhere", "busybox", "true"], "network nowhere not found"),
    (["run", "--ip", "10.0.0.5", "busybox", "true"], "user defined networks only"),
    (["run", "--add-host", "nocolon", "busybox", "true"], "invalid --add-host"),
])
def test_bad_input_is_one_line_and_leaves_nothing(busybox, arguments, complaint):
    arguments = [route_subnet() if word == "ROUTE" else word for word in arguments]
    result = busybox.run(*arguments)
    assert result.returncode == 125
    assert complaint in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert busybox.ok("ps", "-aq") == ""
    assert_nothing_left(busybox, bridges_stay=False)


def test_a_port_in_use_is_refused_before_the_container_starts(busybox):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = busybox.run("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox",
                             "sh", "-c", "echo started")
    assert result.returncode == 125
    assert "port is already allocated" in result.stderr
    assert "started" not in result.stdout
    assert len(result.stderr.strip().splitlines()) == 1
    assert busybox.ok("ps", "-aq") == ""
    assert_nothing_left(busybox, bridges_stay=False)


def test_a_port_held_by_another_container_is_refused(busybox):
    port = free_port()
    run_detached(busybox, "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "30")
    result = busybox.run("run", "--rm", "-p", f"{port}:80", "busybox", "true")
    assert result.returncode == 125 and "port is already allocated" in result.stderr


# -- the module on its own ------------------------------------------------------------

def test_parse_publish_reads_every_docker_form():
    assert network.parse_publish("80") == {"HostIp": "", "HostPort": "", "ContainerPort": "80",
                                           "Protocol": "tcp"}
    assert network.parse_publish("8080:80/udp")["HostPort"] == "8080"
    assert network.parse_publish("127.0.0.1::80")["HostIp"] == "127.0.0.1"
    assert network.describe_ports({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                                   "443/tcp": None}) == "443/tcp, 0.0.0.0:8080->80/tcp"


def test_pick_subnet_skips_what_is_taken():
    taken = [(ipaddress.ip_network("172.16.0.0/13"), "a route")]
    assert str(network.pick_subnet(taken)) == "172.24.0.0/16"
    everything = [(ipaddress.ip_network("0.0.0.0/1"), "x"), (ipaddress.ip_network("128.0.0.0/1"), "y")]
    with pytest.raises(network.host.EngineError, match="no free subnet"):
        network.pick_subnet(everything)


def test_mac_address_follows_the_ip_address():
    assert network.mac_address_for(ipaddress.ip_address("172.17.0.2")) == "02:42:ac:11:00:02"


def test_preflight_explains_a_dropping_forward_chain():
    # In a network namespace of its own, so the host's settings stay untouched.
    script = ("from minidocker import network\n"
              "open(network.FORWARDING, 'w').write('0')\n"
              "import subprocess\n"
              "subprocess.run(['iptables', '-w', '-P', 'FORWARD', 'DROP'], check=True)\n"
              "subprocess.run(['iptables', '-w', '-A', 'FORWARD', '-j', 'ACCEPT'], check=True)\n"
              "print('\\n'.join(network.preflight()))\n")
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", script],
                            capture_output=True, text=True, check=True)
    problems = result.stdout.splitlines()
    assert any("ip_forward is 0" in line for line in problems)
    assert any("policy is DROP" in line and "ahead of MINIDOCKER-FORWARD" in line
               for line in problems)
