"""Chapter 5: networking, from an empty namespace to a published port.

A new network namespace holds nothing but a loopback interface that is down:
no address, no route, no way out.  Four pieces of the kernel turn that into
the network a Docker user expects, and this module uses each one through
iproute2 (``ip``) and ``iptables``:

* a **veth pair** is a cable with two ends.  ip-link(8): "The veth devices
  are virtual Ethernet devices [...] Packets transmitted on one device in
  the pair are immediately received on the other device."  One end stays on
  the host (``md<id>``), the other is born inside the container's namespace
  as ``eth0``;
* a **bridge** is a switch.  Every host end is plugged into it, so the
  containers of one network share one Ethernet segment.  The bridge also
  has an address, the *gateway*: the containers' default route leads there,
  into the host's routing table;
* **NAT** (``MASQUERADE``) lets containers out: a packet that leaves the host
  from a container's private address gets the host's address as its source,
  and the replies are translated back;
* **DNAT** lets the world in: a packet for a published host port gets the
  container's address and port as its destination.

Names come last: on a user-defined network each container's ``/etc/hosts``
lists the others, rewritten whenever one comes or goes.

The order of the code is the order of :func:`connect`: find the network,
reserve the published ports, take an address, bring the bridge up, plug the
cable, publish the ports, write the names.  :func:`disconnect` undoes each
step and works from the container's recorded settings alone, or even
without them, because every host object it made carries the container's or
the network's id in its name or comment.

A network's bridge lives as long as the network, as Docker's ``docker0``
lives as long as the daemon's default network: the first container brings
it up, the last one leaves it standing, and only ``network rm`` (or
``system reset``) takes it down.  So a container's start usually finds the
bridge ready and only plugs its cable in.

Everything in the host's tables lives in minidocker's own chains
(``MINIDOCKER``, ``MINIDOCKER-POSTROUTING``, ``MINIDOCKER-FORWARD``,
``MINIDOCKER-INPUT``), which exist only while some minidocker bridge does.
"""

# ipaddress is imported by the functions that handle subnets: a container
# with --network none never needs it, and importing it costs ~2.5 ms.
import os
import _socket  # not socket, nor json or contextlib, on the start path: see host.py
import struct
import sys

from minidocker import host
from minidocker import rootfs

CHAPTER = 5

#: The network a container joins when ``--network`` is not given.
DEFAULT_NETWORK = "bridge"

#: Networks every engine has; the last two need no bridge at all.
BUILTIN_NETWORKS = ("bridge", "host", "none")

#: Where automatic subnets come from, in order: Docker's default address
#: pools, 172.17-31.0.0/16, then 192.168.0.0/16 cut into /20s.
ADDRESS_POOLS = (*(f"172.{second}.0.0/16" for second in range(17, 32)),
                 *(f"192.168.{third}.0/20" for third in range(0, 256, 16)))

#: Every minidocker bridge's name starts so; ``mdbr+`` matches them all in
#: iptables.  Host ends of veth pairs are ``md`` and hexadecimal digits, so
#: they can never start with ``mdbr``.
BRIDGE_PREFIX = "mdbr"

FORWARDING = "/proc/sys/net/ipv4/ip_forward"

#: Shared by every engine root on this host: the bridges, the subnets they
#: route and the iptables chains are host-wide, so their lock must be too.
#: /run/lock is where the FHS puts lock files shared between programs.
HOST_LOCK = "/run/lock/minidocker-network.lock"

#: The ports a container's monitor holds open while the container runs.
_reserved_sockets = {}


# -- the two entry points: connect and disconnect ------------------------

def connect(container_id, pid, request):
    """Give the container whose PID 1 is ``pid`` its network; return its settings.

    The container's process must already be in its own network namespace
    (and, for ``--network host``, must not be).  ``request`` is a dict:
    ``network`` (a name, ``host`` or ``none``), ``ip``, ``publish`` (the
    ``-p`` specs), ``publish_all`` and ``exposed_ports`` (for ``-P``),
    ``aliases``, ``name``, ``hostname``, ``add_hosts``, ``dns`` and
    ``directory``, the container directory whose ``hosts`` and
    ``resolv.conf`` files are bound over the image's.

    The returned dict is the container's ``NetworkSettings``, in Docker's
    shape; the engine stores it and hands it back to :func:`disconnect`.
    If any step fails, the steps already taken are undone before the error
    goes on.
    """
    mode = network_mode(request.get("network"))
    if mode in ("none", "host"):
        if mode == "host" and request.get("publish"):
            print("WARNING: Published ports are discarded when using host network mode",
                  file=sys.stderr)
        settings = _unconnected_settings(mode)
        _write_name_files(request, settings)
        return settings
    ports = requested_ports(request)
    sockets = reserve_host_ports(ports)
    settings = _unconnected_settings(mode)
    try:
        endpoint = _join(container_id, mode, request, settings)
        plug_cable(container_id, pid, endpoint, settings)
        settings["Ports"] = publish_ports(container_id, endpoint["IPAddress"], ports,
                                          request.get("exposed_ports", ()))
    except BaseException:
        _close(sockets)
        disconnect(container_id, settings)
        raise
    _reserved_sockets[container_id] = sockets
    return settings


def disconnect(container_id, settings=None):
    """Undo :func:`connect`: the container's rules, its cable and its address.

    The network's bridge stays up for the next container (see
    :func:`bridge_is_ready`).

    Safe to call twice, after a half-finished :func:`connect`, and after the
    monitor that connected the container was killed: whatever is already
    gone is skipped.  Without ``settings`` every kind of leftover is looked
    for.  Returns the settings of a container that is not connected (no
    address, no ports), for the engine to record.
    """
    settings = settings or {}
    _close(_reserved_sockets.pop(container_id, []))
    mode = settings.get("NetworkMode", "")
    if mode not in ("none", "host"):
        if settings.get("Ports") or not settings:
            remove_rules_marked(container_comment(container_id))
        unplug_cable(container_id)
        _leave(container_id)
    return _unconnected_settings(mode)


def network_mode(name):
    """Return the network a ``--network`` value names (``default`` is ``bridge``)."""
    if name in (None, "", "default"):
        return DEFAULT_NETWORK
    return name


def check_request(request):
    """Check a run's network options before anything is created.

    Raises :class:`host.EngineError` for an unknown network, a malformed
    ``-p`` spec, an ``--ip`` the network cannot give, a host port already
    taken, or a bad ``--add-host``, so that ``run`` fails with one line and
    leaves nothing behind.
    """
    mode = network_mode(request.get("network"))
    for entry in request.get("add_hosts", ()):
        parse_extra_host(entry)
    for server in request.get("dns", ()):
        _parse_address(server, "--dns")
    if mode in ("none", "host"):
        if request.get("publish") and mode == "none":
            raise host.EngineError("published ports need a network: --network none has none")
        return
    network = _read_network(mode)
    if request.get("ip"):
        _check_requested_address(network, request["ip"])
    _close(reserve_host_ports(requested_ports(request)))


# -- what the engine records: from `run` flags to a connect request -------

def configuration(options, image_config):
    """Check a run's network flags; return what the container's config records.

    The result has Docker's keys: ``HostConfig`` (``NetworkMode``,
    ``PortBindings``, ``PublishAllPorts``, ``Dns``, ``ExtraHosts``),
    ``ExposedPorts`` (for ``Config``) and ``NetworkingConfig``.
    """
    request = {
        "network": options.get("network"), "ip": options.get("ip"),
        "publish": list(options.get("publish") or ()),
        "publish_all": bool(options.get("publish_all")),
        "exposed_ports": sorted(image_config.get("ExposedPorts") or {}),
        "aliases": list(options.get("network_aliases") or ()),
        "add_hosts": list(options.get("add_hosts") or ()), "dns": list(options.get("dns") or ()),
    }
    check_request(request)
    mode = network_mode(request["network"])
    bindings = {}
    for port in requested_ports(dict(request, publish_all=False)):
        bindings.setdefault(f"{port['ContainerPort']}/{port['Protocol']}", []).append(
            {"HostIp": port["HostIp"], "HostPort": port["HostPort"]})
    return {
        "HostConfig": {"NetworkMode": mode, "PortBindings": bindings,
                       "PublishAllPorts": request["publish_all"],
                       "Dns": request["dns"], "ExtraHosts": request["add_hosts"]},
        "ExposedPorts": {port: {} for port in request["exposed_ports"]},
        "NetworkingConfig": {"EndpointsConfig": {mode: {
            "IPAMConfig": {"IPv4Address": request["ip"] or ""}, "Aliases": request["aliases"]}}},
    }


def request_for(config, directory):
    """Build :func:`connect`'s request from a container's recorded config."""
    host_config = config["HostConfig"]
    mode = host_config.get("NetworkMode") or "none"
    endpoint = config.get("NetworkingConfig", {}).get("EndpointsConfig", {}).get(mode, {})
    return {
        "network": mode,
        "ip": endpoint.get("IPAMConfig", {}).get("IPv4Address") or None,
        "publish": [{"HostIp": binding["HostIp"], "HostPort": binding["HostPort"],
                     "ContainerPort": key.partition("/")[0], "Protocol": key.partition("/")[2]}
                    for key, bindings in (host_config.get("PortBindings") or {}).items()
                    for binding in bindings],
        "publish_all": host_config.get("PublishAllPorts", False),
        "exposed_ports": sorted(config["Config"].get("ExposedPorts") or {}),
        "aliases": endpoint.get("Aliases", []),
        "name": config.get("Name", "").lstrip("/"),
        "hostname": config["Config"].get("Hostname"),
        "add_hosts": host_config.get("ExtraHosts") or [],
        "dns": host_config.get("Dns") or [],
        "directory": directory,
    }


# -- networks: the records behind `network create/ls/inspect/rm` ----------

def create_network(name, subnet=None, gateway=None, driver="bridge"):
    """Create a user-defined bridge network and return its record.

    Only the record is written here.  The bridge itself appears when the
    first container joins, and stays until the network is removed.
    """
    _check_network_name(name)
    if driver != "bridge":
        raise host.EngineError(f"network driver {driver!r} is not supported: use bridge")
    if name in BUILTIN_NETWORKS:
        raise host.EngineError(f"network with name {name} already exists")
    with _networks_lock():
        if os.path.exists(_record_path(name)):
            raise host.EngineError(f"network with name {name} already exists")
        record = _new_record(name, subnet, gateway)
        _save_record(record)
    return record


def remove_network(name):
    """Remove a user-defined network, its bridge and its rules.

    Refused while a container uses it.  With the last minidocker bridge on
    the host, minidocker's chains go too.
    """
    if name in BUILTIN_NETWORKS:
        raise host.EngineError(f"{name} is a pre-defined network and cannot be removed",
                               exit_code=1)
    with _networks_lock():
        record = _read_network(name, exit_code=1)
        if record["Endpoints"]:
            users = ", ".join(sorted(e["Name"] for e in record["Endpoints"].values()))
            raise host.EngineError(
                f"error while removing network: network {name} id {record['Id'][:12]} "
                f"has active endpoints ({users})", exit_code=1)
        tear_down_bridge(record)
        os.unlink(_record_path(name))


def prune_networks():
    """Remove every user-defined network no container uses; return their names."""
    removed = []
    with _networks_lock():
        for record in _all_records():
            if record["Name"] in BUILTIN_NETWORKS or record["Endpoints"]:
                continue
            tear_down_bridge(record)
            os.unlink(_record_path(record["Name"]))
            removed.append(record["Name"])
    return removed


def remove_all_networks():
    """Take down every network of this engine root, the default one too.

    For ``system reset``, once the containers are gone: each network's
    bridge and rules go, minidocker's chains with the last bridge on the
    host, and the records.  A container still listed on a network (its
    monitor was killed, its record lost) loses its cable and rules here.
    Returns the names of the networks that were removed.
    """
    removed = []
    with _networks_lock():
        for record in _all_records():
            for container_id in record["Endpoints"]:
                unplug_cable(container_id)
                remove_rules_marked(container_comment(container_id))
            tear_down_bridge(record)
            os.unlink(_record_path(record["Name"]))
            removed.append(record["Name"])
    return removed


def list_networks():
    """Return every network's record: the built-in three, then the user's."""
    with _networks_lock():
        records = [_read_network(name) for name in BUILTIN_NETWORKS]
        for entry in sorted(os.listdir(_networks_directory())):
            name = entry.removesuffix(".json")
            if entry.endswith(".json") and name not in BUILTIN_NETWORKS:
                records.append(_load_record(name))
    return records


def inspect_network(name):
    """Return what ``network inspect`` prints for one network, in Docker's shape."""
    record = _read_network(name, exit_code=1)
    config = [{"Subnet": record["Subnet"], "Gateway": record["Gateway"]}] \
        if record.get("Subnet") else []
    containers = {
        container_id: {
            "Name": endpoint["Name"],
            "EndpointID": endpoint["EndpointID"],
            "MacAddress": endpoint["MacAddress"],
            "IPv4Address": f"{endpoint['IPAddress']}/{_prefix_length(record)}",
            "IPv6Address": "",
        }
        for container_id, endpoint in record["Endpoints"].items()
    }
    options = {"com.docker.network.bridge.name": record["Bridge"]} if record["Bridge"] else {}
    return {
        "Name": record["Name"], "Id": record["Id"], "Created": record["Created"],
        "Scope": "local", "Driver": record["Driver"], "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": False, "Attachable": False, "Ingress": False,
        "Containers": containers, "Options": options, "Labels": {},
    }


def _new_record(name, subnet=None, gateway=None):
    import ipaddress

    import datetime

    network_id = os.urandom(32).hex()
    record = {
        "Name": name, "Id": network_id, "Driver": "bridge",
        "Created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "Bridge": f"{BRIDGE_PREFIX}-{network_id[:10]}",
        "SubnetChosenBy": "user" if subnet else "engine",
        "Subnet": None, "Gateway": None, "Endpoints": {},
    }
    if subnet:
        record["Subnet"] = str(_parse_subnet(subnet))
        _refuse_overlap(ipaddress.ip_network(record["Subnet"]), _subnets_in_use(exclude=name))
    else:
        record["Subnet"] = str(pick_subnet(_subnets_in_use(exclude=name)))
    record["Gateway"] = _choose_gateway(ipaddress.ip_network(record["Subnet"]), gateway)
    return record


def _read_network(name, exit_code=125):
    """Load a network's record, making the built-in ones on first use."""
    if name in ("host", "none"):
        return _builtin_record(name)
    if not os.path.exists(_record_path(name)):
        if name != DEFAULT_NETWORK:
            raise host.EngineError(f"network {name} not found", exit_code=exit_code)
        _create_default_network()
    return _load_record(name)


def _create_default_network():
    # Made on first use, maybe by several commands at once, some of them
    # already holding the networks lock.  link(2) fails with EEXIST "if
    # newpath already exists", so exactly one record lands, without a lock.
    path = _record_path(DEFAULT_NETWORK)
    draft = f"{path}.new{os.getpid()}"
    host.write_atomically(draft, host.dump_json(_new_record(DEFAULT_NETWORK)))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another command made it first; theirs is as good
    finally:
        os.unlink(draft)


def _builtin_record(name):
    # host and none own nothing.  Like Docker, each gets a random id once;
    # it is kept in the engine root so `network ls` shows the same one
    # every time (link(2) again makes exactly one win a race).
    path = os.path.join(_networks_directory(), f".{name}-id")
    if not os.path.exists(path):
        draft = f"{path}.new{os.getpid()}"
        host.write_atomically(draft, os.urandom(32).hex())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    with open(path) as handle:
        network_id = handle.read().strip()
    return {"Name": name, "Id": network_id, "Driver": "host" if name == "host" else "null",
            "Created": "", "Bridge": None, "Subnet": None, "Gateway": None, "Endpoints": {}}


def _check_network_name(name):
    # Docker's rule; it also makes the name safe as a file name.
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    if not name or not name[0].isalnum() or not set(name) <= allowed:
        raise host.EngineError(
            f"invalid network name {name!r}: use letters, digits, '_', '.' and '-'")


def _networks_directory():
    directory = os.path.join(host.engine_root(), "networks")
    os.makedirs(directory, exist_ok=True)
    return directory


def _networks_lock():
    # One lock for every network record of this engine root: allocations
    # are short, and one lock cannot deadlock with itself.
    return host.locked(os.path.join(_networks_directory(), "lock"))


def _record_path(name):
    return os.path.join(_networks_directory(), f"{name}.json")


def _load_record(name):
    return host.read_json(_record_path(name))


def _save_record(record):
    host.write_atomically(_record_path(record["Name"]), host.dump_json(record))


def _all_records():
    directory = _networks_directory()
    return [_load_record(entry.removesuffix(".json"))
            for entry in sorted(os.listdir(directory)) if entry.endswith(".json")]


# -- subnets: a private range no route on the host already claims --------

def pick_subnet(taken):
    """Return the first pool subnet that overlaps none of ``taken``."""
    import ipaddress

    for candidate in map(ipaddress.ip_network, ADDRESS_POOLS):
        if not any(candidate.overlaps(other) for other, _ in taken):
            return candidate
    raise host.EngineError("no free subnet left in the address pools: "
                           "give one with network create --subnet")


def _subnets_in_use(exclude=None, exclude_bridge=None):
    """Return (subnet, where) pairs: the host's routes and this engine's networks."""
    import ipaddress

    taken = [(subnet, f"the host route {subnet} dev {device}")
             for subnet, device in host_routes() if device != exclude_bridge]
    for record in _all_records():
        if record["Name"] != exclude and record.get("Subnet"):
            taken.append((ipaddress.ip_network(record["Subnet"]),
                          f"the subnet of network {record['Name']}"))
    return taken


def host_routes():
    """Return the host's IPv4 routes as (subnet, device), default route left out.

    /proc/net/route is the kernel's own table (main routing table): one line
    per route, addresses in hexadecimal in the host's byte order.
    """
    import ipaddress

    routes = []
    with open("/proc/net/route") as table:
        next(table)
        for line in table:
            fields = line.split()
            destination, mask = _hex_address(fields[1]), _hex_address(fields[7])
            subnet = ipaddress.ip_network(f"{destination}/{mask}", strict=False)
            if subnet.prefixlen:
                routes.append((subnet, fields[0]))
    return routes


def _hex_address(text):
    import ipaddress

    return ipaddress.IPv4Address(int(text, 16).to_bytes(4, sys.byteorder))


def _refuse_overlap(subnet, taken):
    for other, where in taken:
        if subnet.overlaps(other):
            raise host.EngineError(f"subnet {subnet} overlaps {where}")


def _parse_subnet(text):
    import ipaddress

    try:
        subnet = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise host.EngineError(f"invalid subnet {text!r}: expected an IPv4 CIDR like 10.10.0.0/24")
    if subnet.version != 4:
        raise host.EngineError(f"invalid subnet {text!r}: only IPv4 is supported")
    if subnet.prefixlen > 29:
        raise host.EngineError(f"subnet {subnet} is too small: use /29 or larger")
    if str(subnet) != text and subnet.network_address != ipaddress.ip_interface(text).ip:
        raise host.EngineError(f"invalid subnet {text!r}: did you mean {subnet}?")
    return subnet


def _choose_gateway(subnet, gateway):
    if not gateway:
        return str(next(subnet.hosts()))
    address = _parse_address(gateway, "--gateway")
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise host.EngineError(f"gateway {gateway} is not a host address of subnet {subnet}")
    return str(address)


def _prefix_length(record):
    import ipaddress

    return ipaddress.ip_network(record["Subnet"]).prefixlen


# -- joining and leaving: addresses, under the lock ----------------------

def _join(container_id, name, request, settings):
    """Take an address on network ``name`` and make sure its bridge is up."""
    with _networks_lock():
        record = _read_network(name)
        if not bridge_is_ready(record):
            bring_up_bridge(record)
        endpoint = _allocate(record, container_id, request)
        record["Endpoints"][container_id] = endpoint
        _save_record(record)
        _fill_settings(settings, record, endpoint)
        _write_all_name_files(record, request, container_id)
    return endpoint


def _leave(container_id):
    """Give the container's addresses back; the bridge stays for the next one."""
    with _networks_lock():
        for record in _all_records():
            if container_id not in record["Endpoints"]:
                continue
            del record["Endpoints"][container_id]
            _save_record(record)
            _write_all_name_files(record)


def _allocate(record, container_id, request):
    import ipaddress

    subnet = ipaddress.ip_network(record["Subnet"])
    if request.get("ip"):
        address = _check_requested_address(record, request["ip"])
    else:
        address = _first_free_address(record, subnet)
    return {
        "Name": request.get("name") or container_id[:12],
        "Hostname": request.get("hostname") or container_id[:12],
        "Aliases": list(request.get("aliases", ())),
        # os.urandom is what secrets.token_hex reads, without the ~10 ms
        # of imports (hmac, hashlib, random) the secrets module costs a start.
        "EndpointID": os.urandom(32).hex(),
        "IPAddress": str(address),
        "MacAddress": mac_address_for(address),
        "Directory": request.get("directory"),
    }


def _first_free_address(record, subnet):
    taken = {record["Gateway"], *(e["IPAddress"] for e in record["Endpoints"].values())}
    for address in subnet.hosts():
        if str(address) not in taken:
            return address
    raise host.EngineError(f"no free address left in network {record['Name']} ({subnet})")


def _check_requested_address(record, text):
    import ipaddress

    if record["Name"] == DEFAULT_NETWORK:
        raise host.EngineError("user specified IP address is supported on user defined networks only")
    address = _parse_address(text, "--ip")
    subnet = ipaddress.ip_network(record["Subnet"])
    if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
        raise host.EngineError(f"--ip {text} is not a host address of network "
                               f"{record['Name']} ({subnet})")
    users = {e["IPAddress"]: e["Name"] for e in record["Endpoints"].values()}
    if text == record["Gateway"]:
        raise host.EngineError(f"--ip {text} is the gateway of network {record['Name']}")
    if text in users:
        raise host.EngineError(f"address {text} is already in use by container {users[text]}")
    return address


def mac_address_for(address):
    """Derive a MAC address from an IPv4 address, as Docker does.

    02 marks a locally administered, unicast address (the low two bits of
    the first byte); the last four bytes are the IPv4 address, so no two
    containers on one network share a MAC.
    """
    return "02:42:" + ":".join(f"{byte:02x}" for byte in address.packed)


def _fill_settings(settings, record, endpoint):
    prefix = _prefix_length(record)
    settings.update({
        "Bridge": record["Bridge"], "IPAddress": endpoint["IPAddress"], "IPPrefixLen": prefix,
        "Gateway": record["Gateway"], "MacAddress": endpoint["MacAddress"],
    })
    settings["Networks"] = {record["Name"]: {
        "NetworkID": record["Id"], "EndpointID": endpoint["EndpointID"],
        "Gateway": record["Gateway"], "IPAddress": endpoint["IPAddress"],
        "IPPrefixLen": prefix, "MacAddress": endpoint["MacAddress"],
        "Aliases": endpoint["Aliases"],
    }}


def _unconnected_settings(mode):
    settings = {"NetworkMode": mode, "Bridge": "", "IPAddress": "", "IPPrefixLen": 0,
                "Gateway": "", "MacAddress": "", "Ports": {}, "Networks": {}}
    if mode in ("none", "host"):
        settings["Networks"] = {mode: {"NetworkID": _builtin_record(mode)["Id"],
                                       "IPAddress": "", "Gateway": "", "MacAddress": ""}}
    return settings


# -- the bridge: a switch on the host, with the gateway's address --------

def bridge_is_ready(record):
    """Say whether the network's bridge, its address and its rules are all in place.

    A bridge outlives its containers, so most starts find it ready, and
    this look (three small kernel files and one ``iptables-save``) stands
    in for the whole set-up.  If anything is missing (the host rebooted,
    someone deleted the bridge or flushed the tables), :func:`bring_up_bridge`
    runs again and puts back what is gone.
    """
    import ipaddress

    bridge, subnet = record["Bridge"], ipaddress.ip_network(record["Subnet"])
    # ip-route(8): the kernel adds the route of an address's subnet (proto
    # kernel) when the address is added to a link that is up, and deletes
    # it when the link goes down.  So the route says: the bridge exists, is
    # up and holds its gateway address.
    if (subnet, bridge) not in host_routes():
        return False
    if _read_setting(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet") != "1" \
            or _read_setting(FORWARDING) != "1":
        return False
    if not rules_are_in_place(record):
        return False
    host.narrate(CHAPTER, f"{bridge} is up with its address and rules: nothing to set up")
    return True


def bring_up_bridge(record):
    """Create the network's bridge, give it the gateway address, add its rules.

    Runs under the host-wide lock: two engines must not pick the same
    subnet or both decide the chains are missing.
    """
    with host.locked(HOST_LOCK):
        _settle_subnet(record)
        enable_forwarding()
        bridge, gateway = record["Bridge"], f"{record['Gateway']}/{_prefix_length(record)}"
        # The MTU is set apart from "link add": the kernel keeps a bridge's
        # MTU only when it was set on the bridge itself; one given at
        # creation falls back to 1500 when the last port leaves.
        commands = [f"link set {bridge} mtu {uplink_mtu()}",
                    f"addr replace {gateway} dev {bridge}", f"link set {bridge} up"]
        if not _link_exists(bridge):
            commands.insert(0, f"link add {bridge} type bridge")
        _ip_batch(commands)
        # Published ports on 127.0.0.1 are DNATed to the container, but the
        # kernel drops packets with a loopback address on any other device
        # ("martians") unless route_localnet is set on it.  See ports below.
        host.write(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet", "1", CHAPTER)
        add_network_rules(record)
        for problem in preflight():
            print(f"WARNING: {problem}", file=sys.stderr)


def tear_down_bridge(record):
    """Remove the network's rules and bridge, and the chains if no bridge is left."""
    with host.locked(HOST_LOCK):
        others = [name for name in os.listdir("/sys/class/net")
                  if name.startswith(BRIDGE_PREFIX) and name != record["Bridge"]]
        remove_network_rules(record, last=not others)
        if _link_exists(record["Bridge"]):
            host.run(["ip", "link", "delete", record["Bridge"], "type", "bridge"], CHAPTER)


def _settle_subnet(record):
    import ipaddress

    # An idle network holds no route, so another engine root may have
    # taken its subnet meanwhile.  An engine-chosen subnet simply moves;
    # a subnet the user chose is refused with the reason.
    taken = _subnets_in_use(exclude=record["Name"], exclude_bridge=record["Bridge"])
    subnet = ipaddress.ip_network(record["Subnet"])
    if not any(subnet.overlaps(other) for other, _ in taken):
        return
    if record.get("SubnetChosenBy") == "user":
        _refuse_overlap(subnet, taken)
    record["Subnet"] = str(pick_subnet(taken))
    record["Gateway"] = _choose_gateway(ipaddress.ip_network(record["Subnet"]), None)
    host.narrate(CHAPTER, f"{subnet} is taken now: network {record['Name']} moves to "
                          f"{record['Subnet']}")


def enable_forwarding():
    """Make the kernel route packets between interfaces (net.ipv4.ip_forward=1).

    Without it a container reaches its own network and the host, and
    nothing beyond: ip-sysctl.txt, "ip_forward - BOOLEAN: 0 - disabled
    (default), not 0 - enabled.  Forward Packets between interfaces."
    """
    with open(FORWARDING) as setting:
        if setting.read().strip() == "1":
            return
    host.narrate(CHAPTER, "net.ipv4.ip_forward is 0: the kernel would not route container "
                          "packets beyond the bridge, so it is switched on")
    try:
        host.write(FORWARDING, "1", CHAPTER)
    except OSError as error:
        raise host.EngineError(
            f"net.ipv4.ip_forward is 0 and cannot be set ({error.strerror}): containers "
            "could not reach past their bridge; run 'sysctl -w net.ipv4.ip_forward=1'")


def uplink_mtu():
    """Return the MTU of the interface the default route leaves by (else 1500).

    A container's packets leave through that interface; an MTU larger than
    its own would make them too big to go out whole.
    """
    with open("/proc/net/route") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == "00000000" and fields[7] == "00000000":
                with open(f"/sys/class/net/{fields[0]}/mtu") as mtu:
                    return int(mtu.read())
    return 1500


def _link_exists(name):
    return bool(name) and os.path.exists(f"/sys/class/net/{name}")


def _read_setting(path):
    # None when the file is gone: a link deleted between two looks.
    try:
        with open(path) as setting:
            return setting.read().strip()
    except FileNotFoundError:
        return None


# -- the cable: a veth pair from the bridge into the container -----------

def host_interface_name(container_id):
    """The host end's name: ``md`` and twelve digits of the container id (15 at most)."""
    return f"md{container_id[:12]}"


def plug_cable(container_id, pid, endpoint, settings):
    """Create the veth pair, one end on the bridge, ``eth0`` inside ``pid``'s namespace.

    The inner end is created directly in the container's namespace
    (``netns PID``), already named ``eth0``: renaming it inside would clash
    with nothing there, but creating it on the host would clash with the
    host's own ``eth0``.
    """
    outside = host_interface_name(container_id)
    mtu = _bridge_mtu(settings["Bridge"])
    _ip_batch([
        f"link add {outside} mtu {mtu} type veth peer name eth0 mtu {mtu} "
        f"address {endpoint['MacAddress']} netns {pid}",
        f"link set {outside} master {settings['Bridge']} up",
    ])
    # eth0's address and route are set by the container's PID 1 itself,
    # already in the namespace: see configure_eth0.


def unplug_cable(container_id):
    """Delete the host end of the cable; the kernel deletes its peer with it.

    When the container's namespace died first, the kernel has already
    removed both ends, and there is nothing to do.
    """
    outside = host_interface_name(container_id)
    if not _link_exists(outside):
        return
    result = host.run(["ip", "link", "delete", outside], CHAPTER, check=False)
    # The namespace may die between the look and the delete, taking the
    # pair with it: that failure is the success we wanted.
    if result.returncode != 0 and _link_exists(outside):
        raise host.EngineError(f"ip link delete {outside} failed: "
                               f"{result.stderr.decode(errors='replace').strip()}")


def _bridge_mtu(bridge):
    with open(f"/sys/class/net/{bridge}/mtu") as mtu:
        return int(mtu.read())


def _ip_batch(commands):
    """Run several ``ip`` commands in one process."""
    for command in commands:
        host.narrate(CHAPTER, f"ip {command}")
    host.run(["ip", "-batch", "-"], CHAPTER, input="\n".join(commands).encode() + b"\n")


# -- inside the container: eth0's address and route ----------------------

#: linux/sockios.h: the ioctls ifconfig(8) and route(8) are made of.
SIOCADDRT, SIOCGIFFLAGS, SIOCSIFFLAGS = 0x890B, 0x8913, 0x8914
SIOCSIFADDR, SIOCSIFNETMASK = 0x8916, 0x891C
IFF_UP = 0x1
RTF_UP, RTF_GATEWAY = 0x1, 0x2


def configure_eth0(address, prefix_length, gateway):
    """Give ``eth0`` its address, set it up, and route everything via the gateway.

    The container's PID 1 calls this in its own network namespace once the
    monitor has plugged the cable in.  The three steps are ``ip addr add``,
    ``ip link set up`` and ``ip route add default``, made with the ioctls
    that ifconfig(8) and route(8) use (netdevice(7), route(7)): no tool to
    start, and no ``nsenter`` to start it in the namespace.
    """
    import fcntl

    with probe_socket() as probe:
        mask = (0xFFFFFFFF << (32 - prefix_length)) & 0xFFFFFFFF
        host.call(CHAPTER, f"ip addr add {address}/{prefix_length} dev eth0", _set_addresses,
                  probe, _socket_address(address), _socket_address(mask.to_bytes(4, "big")))
        set_link_up(probe, "eth0")
        # route(7)'s struct rtentry: rt_pad1, rt_dst, rt_gateway, rt_genmask,
        # rt_flags, then fields left zero (rt_dev NULL: the kernel picks the
        # device that reaches the gateway).  "0L" pads it to the C size.
        route = struct.pack("@L16s16s16sHhLPhPLLH0L", 0, _socket_address("0.0.0.0"),
                            _socket_address(gateway), _socket_address("0.0.0.0"),
                            RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0)
        host.call(CHAPTER, f"ip route add default via {gateway}", fcntl.ioctl,
                  probe, SIOCADDRT, route)


class probe_socket:
    """Any socket, for the netdevice(7) ioctls: it names the network namespace.

    Used as ``with probe_socket() as probe:``; the socket is closed after.
    """

    def __enter__(self):
        self.probe = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        return self.probe

    def __exit__(self, *exception):
        self.probe.close()


def set_link_up(probe, name):
    """Set the interface ``name`` up, as ``ip link set NAME up``.

    netdevice(7): SIOCGIFFLAGS and SIOCSIFFLAGS "get or set the active flag
    word of the device"; IFF_UP is bit 0.  ``probe`` is any socket.
    """
    import fcntl

    request = struct.pack("16sH22x", name.encode(), 0)
    flags = struct.unpack("16sH22x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
    host.call(CHAPTER, f"ip link set {name} up", fcntl.ioctl, probe, SIOCSIFFLAGS,
              struct.pack("16sH22x", name.encode(), flags | IFF_UP))


def _set_addresses(probe, address, netmask):
    # netdevice(7): struct ifreq is the name (16 bytes) and a union whose
    # largest member makes it 40 bytes; the address goes in as a sockaddr.
    import fcntl

    fcntl.ioctl(probe, SIOCSIFADDR, struct.pack("16s16s8x", b"eth0", address))
    fcntl.ioctl(probe, SIOCSIFNETMASK, struct.pack("16s16s8x", b"eth0", netmask))


def _socket_address(address):
    """A ``struct sockaddr_in`` for an IPv4 address (text, or four bytes), port 0."""
    packed = _socket.inet_aton(address) if isinstance(address, str) else address
    return struct.pack("=HH4s8x", _socket.AF_INET, 0, packed)


# -- the firewall: minidocker's own chains -------------------------------
#
# The host's built-in chains get one jump each into a chain of ours, and
# every rule minidocker adds lives in one of those, so `iptables -S` shows
# at a glance what the engine did and removing it is a matter of flushing
# four chains.

#: (table, our chain, the built-in chain that jumps to it, the jump's match).
HOOKS = (
    # DNAT only what is addressed to this host (addrtype LOCAL), whether it
    # comes from outside (PREROUTING) or from the host itself (OUTPUT).
    ("nat", "MINIDOCKER", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL"]),
    ("nat", "MINIDOCKER", "OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL"]),
    ("nat", "MINIDOCKER-POSTROUTING", "POSTROUTING", []),
    ("filter", "MINIDOCKER-FORWARD", "FORWARD", []),
    ("filter", "MINIDOCKER-INPUT", "INPUT", []),
)

#: Rules every minidocker bridge shares; ``mdbr+`` matches any of them.
SHARED_RULES = (
    # Replies, and connections to published ports, may enter any network.
    ("filter", "MINIDOCKER-FORWARD",
     ["-o", "mdbr+", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "ACCEPT"]),
    # Networks are isolated from each other (a network's own traffic is
    # accepted before this by its own rule, see add_network_rules) ...
    ("filter", "MINIDOCKER-FORWARD", ["-i", "mdbr+", "-o", "mdbr+", "-j", "DROP"]),
    # ... and may go anywhere else.
    ("filter", "MINIDOCKER-FORWARD", ["-i", "mdbr+", "-j", "ACCEPT"]),
    # route_localnet would also let a container address the host's own
    # 127.0.0.1 services through the gateway; nothing on a bridge may,
    # except the replies of a connection the host opened to 127.0.0.1
    # (their address is turned back into 127.0.0.1 before this rule).
    ("filter", "MINIDOCKER-INPUT", ["-i", "mdbr+", "-d", "127.0.0.0/8", "-m", "conntrack", "!",
                                    "--ctstate", "RELATED,ESTABLISHED", "-j", "DROP"]),
    # A connection from the host's 127.0.0.1 to a published port leaves
    # by a bridge: give it the gateway's address, which the container can
    # answer (its own 127.0.0.1 is itself).
    ("nat", "MINIDOCKER-POSTROUTING", ["-s", "127.0.0.0/8", "-o", "mdbr+", "-j", "MASQUERADE"]),
)


def add_network_rules(record):
    """Add the network's rules, and minidocker's chains first if they are missing.

    The usual case goes in one iptables-restore transaction: all or
    nothing, one process instead of thirty.  Rules the network already has
    (its bridge was deleted, its rules were not) are replaced, not doubled.
    If the host's tables are not what that expects (a chain already there,
    left by a crash), the rules go in one command at a time, each checked
    first.
    """
    chains, rules = saved_tables()
    commands = _deletions_of_marked(rules, network_comment(record))
    if ("filter", "MINIDOCKER-FORWARD") not in chains:
        commands += [(table, ["-N", chain]) for table, chain in _our_chains()]
        commands += [(table, ["-A", chain, *rule]) for table, chain, rule in SHARED_RULES]
        commands += [(table, ["-I", builtin, "1", *match, "-j", chain])
                     for table, chain, builtin, match in HOOKS]
    commands += [(table, ["-I" if first else "-A", chain, *(["1"] if first else []), *rule])
                 for table, chain, first, rule in network_rules(record)]
    if not _restore(commands):
        ensure_chains()
        for table, chain, first, rule in network_rules(record):
            if not _rule_exists(table, chain, rule):
                _iptables(table, "-I" if first else "-A", chain, *(["1"] if first else []), *rule)


def network_rules(record):
    """Return a network's own rules: (table, chain, goes first?, rule)."""
    bridge, mark = record["Bridge"], ["-m", "comment", "--comment", network_comment(record)]
    return [
        # Containers of one network talk freely.  This must come before the
        # shared rule that isolates networks, hence first in the chain.
        # (With br_netfilter loaded, even bridged frames pass FORWARD.)
        ("filter", "MINIDOCKER-FORWARD", True, ["-i", bridge, "-o", bridge, *mark, "-j", "ACCEPT"]),
        # iptables-extensions(8), MASQUERADE: "It should only be used with
        # dynamically assigned IP (dialup) connections" -- or whenever the
        # outgoing address is whatever the host has on the way out.
        ("nat", "MINIDOCKER-POSTROUTING", False,
         ["-s", record["Subnet"], "!", "-o", bridge, *mark, "-j", "MASQUERADE"]),
    ]


def rules_are_in_place(record):
    """Say whether minidocker's chains, the jumps into them and the network's rules exist."""
    chains, rules = saved_tables()
    if not set(_our_chains()) <= chains:
        return False
    for table, chain, builtin, _ in HOOKS:
        if not any(_is_jump(words, builtin, chain) for name, words in rules if name == table):
            return False
    marked = [words for _, words in rules if _comment_of(words) == network_comment(record)]
    return len(marked) == len(network_rules(record))


def remove_network_rules(record, last):
    """Remove a network's rules; with ``last``, minidocker's chains as well."""
    chains, rules = saved_tables()
    if not last:
        _delete(_deletions_of_marked(rules, network_comment(record)))
        return
    # The jumps go first: iptables refuses to delete a chain that is
    # still the target of a rule.
    commands = [(table, ["-D", *words[1:]]) for table, words in rules
                for _, chain, builtin, _ in HOOKS if _is_jump(words, builtin, chain)]
    commands += [(table, [flag, chain]) for table, chain in _our_chains()
                 if (table, chain) in chains for flag in ("-F", "-X")]
    _delete(commands)


def ensure_chains():
    """Create minidocker's chains, their shared rules and the jumps into them."""
    for table, chain in _our_chains():
        if not _chain_exists(table, chain):
            _iptables(table, "-N", chain)
    for table, chain, rule in SHARED_RULES:
        if not _rule_exists(table, chain, rule):
            _iptables(table, "-A", chain, *rule)
    for table, chain, builtin, match in HOOKS:
        # Inserted first: a rule of someone else's earlier in the chain
        # could drop container traffic before ours is seen.
        if not _rule_exists(table, builtin, [*match, "-j", chain]):
            _iptables(table, "-I", builtin, "1", *match, "-j", chain)


def remove_rules_marked(comment):
    """Delete every rule in minidocker's chains whose comment is ``comment``."""
    _, rules = saved_tables()
    _delete(_deletions_of_marked(rules, comment))


def saved_tables():
    """Read the host's tables with one ``iptables-save``: (chains, rules).

    ``chains`` holds (table, chain) pairs; ``rules`` holds (table, words)
    for each rule of minidocker's chains and of the built-in chains that
    jump to them, split the way iptables-restore will read them back.
    Other chains' rules are skipped unread: a busy host may have thousands.
    """
    import shlex

    dump = host.run(["iptables-save"], CHAPTER, capture=True).stdout.decode()
    wanted = {chain for _, chain in _our_chains()} | {builtin for _, _, builtin, _ in HOOKS}
    table, chains, rules = None, set(), []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.add((table, line[1:].split()[0]))
        elif line.startswith("-A ") and line.split()[1] in wanted:
            rules.append((table, shlex.split(line)))
    return chains, rules


def _deletions_of_marked(rules, comment):
    ours = {chain for _, chain in _our_chains()}
    return [(table, ["-D", *words[1:]]) for table, words in rules
            if words[1] in ours and _comment_of(words) == comment]


def _is_jump(words, builtin, chain):
    return words[1] == builtin and words[-2:] == ["-j", chain]


def _delete(commands):
    """Apply deletions in one transaction, or one by one if iptables-restore refuses."""
    if commands and not _restore(commands):
        for table, arguments in commands:
            _iptables(table, *arguments, check=False)


def network_comment(record):
    """The comment that marks a network's rules: its bridge's name."""
    return f"minidocker network {record['Bridge']}"


def container_comment(container_id):
    """The comment that marks a container's rules: its short id."""
    return f"minidocker container {container_id[:12]}"


def _our_chains():
    return sorted({(table, chain) for table, chain, _, _ in HOOKS})


def _comment_of(words):
    if "--comment" in words:
        return words[words.index("--comment") + 1]
    return None


def _chain_exists(table, chain):
    return _iptables(table, "-S", chain, check=False).returncode == 0


def _rule_exists(table, chain, rule):
    return _iptables(table, "-C", chain, *rule, check=False).returncode == 0


def _restore(commands):
    """Apply (table, arguments) commands in one iptables-restore; say if it worked.

    --noflush keeps everything else in the tables.  No -w: iptables 1.4.21
    (CentOS 7) has none for restore, and a failure here only means the
    caller takes the one-command-at-a-time road, which waits for the lock.
    """
    if not commands:
        return True
    script = []
    for table in dict.fromkeys(table for table, _ in commands):
        script += [f"*{table}",
                   *(_restore_line(arguments) for name, arguments in commands if name == table),
                   "COMMIT"]
    for line in script:
        host.narrate(CHAPTER, f"  {line}")
    result = host.run(["iptables-restore", "--noflush"], CHAPTER, check=False,
                      input="\n".join(script).encode() + b"\n")
    if result.returncode != 0:
        host.narrate(CHAPTER, "iptables-restore refused the batch "
                              f"({result.stderr.decode(errors='replace').strip()}): "
                              "one command at a time instead")
    return result.returncode == 0


def _restore_line(arguments):
    # iptables-restore splits on blanks and understands double quotes only.
    return " ".join(f'"{word}"' if " " in word else word for word in arguments)


def _iptables(table, *arguments, check=True, capture=False):
    # -w waits for the xtables lock instead of failing when another
    # iptables runs.  Plain -w, without seconds: iptables 1.4.21 (CentOS 7)
    # knows no "-w N".
    return host.run(["iptables", "-w", "-t", table, *arguments], CHAPTER,
                    check=check, capture=capture)


# -- published ports: -p [IP:][HOSTPORT:]CONTAINERPORT[/PROTOCOL] ---------
#
# A published port is one DNAT rule: "this host, this port" becomes "that
# container, that port".  For 127.0.0.1 the kernel needs one more thing:
# it treats a loopback address seen on any other device as a martian and
# drops it, so the bridge gets route_localnet=1 (and the MASQUERADE of
# 127.0.0.0/8 above).  The alternative, a userland proxy process per port,
# would copy every byte through Python; route_localnet keeps the whole
# path in the kernel and the monitor small.

def parse_publish(spec):
    """Parse one ``-p`` value into a dict, or raise a one-line error.

    >>> parse_publish("127.0.0.1:8080:80/udp")
    {'HostIp': '127.0.0.1', 'HostPort': '8080', 'ContainerPort': '80', 'Protocol': 'udp'}
    """
    text, _, protocol = spec.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp"):
        raise host.EngineError(f"invalid port spec {spec!r}: protocol must be tcp or udp")
    parts = text.split(":")
    if len(parts) > 3:
        raise host.EngineError(f"invalid port spec {spec!r}: expected "
                               "[IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]")
    if len(parts) == 3:
        host_ip, host_port, container_port = parts
    elif len(parts) == 2:
        host_ip, (host_port, container_port) = "", parts
    else:
        host_ip, host_port, container_port = "", "", parts[0]
    if host_ip:
        _parse_address(host_ip, f"port spec {spec!r}: host IP")
    _check_port_number(container_port, spec)
    if host_port:
        _check_port_number(host_port, spec)
    return {"HostIp": host_ip, "HostPort": str(int(host_port)) if host_port else "",
            "ContainerPort": str(int(container_port)), "Protocol": protocol}


def requested_ports(request):
    """Return the ports to publish: every ``-p``, plus each exposed port for ``-P``."""
    ports = [parse_publish(spec) if isinstance(spec, str) else dict(spec)
             for spec in request.get("publish", ())]
    if request.get("publish_all"):
        published = {(p["ContainerPort"], p["Protocol"]) for p in ports}
        for exposed in request.get("exposed_ports", ()):
            number, _, protocol = exposed.partition("/")
            if (number, protocol or "tcp") not in published:
                ports.append({"HostIp": "", "HostPort": "", "ContainerPort": number,
                              "Protocol": protocol or "tcp"})
    return ports


def reserve_host_ports(ports):
    """Bind each host port, so nobody else can take it; return the sockets.

    A port that is already in use is refused here, before the container
    starts.  A port left empty gets one the kernel picks (bind to port 0).
    The sockets never listen (DNAT sends the traffic past them); they are
    held by the container's monitor and closed when the container goes.
    """
    sockets = []
    try:
        for port in ports:
            sockets.append(_bind(port))
    except BaseException:
        _close(sockets)
        raise
    return sockets


def publish_ports(container_id, address, ports, exposed=()):
    """Add the DNAT rule of each published port; return Docker's ``Ports`` dict."""
    published = {f"{port}/tcp" if "/" not in port else port: None for port in exposed}
    mark = ["-m", "comment", "--comment", container_comment(container_id)]
    for port in ports:
        destination = ["-d", port["HostIp"]] if port["HostIp"] not in ("", "0.0.0.0") else []
        _iptables("nat", "-A", "MINIDOCKER", "-p", port["Protocol"], *destination,
                  "--dport", port["HostPort"], *mark,
                  "-j", "DNAT", "--to-destination", f"{address}:{port['ContainerPort']}")
        key = f"{port['ContainerPort']}/{port['Protocol']}"
        published[key] = (published.get(key) or []) + [
            {"HostIp": port["HostIp"] or "0.0.0.0", "HostPort": port["HostPort"]}]
    return published


def describe_ports(ports):
    """Format a ``Ports`` dict the way ``ps`` shows it: ``0.0.0.0:8080->80/tcp``."""
    shown = []
    for key, bindings in sorted((ports or {}).items()):
        if not bindings:
            shown.append(key)
        for binding in bindings or ():
            shown.append(f"{binding['HostIp']}:{binding['HostPort']}->{key}")
    return ", ".join(shown)


def _bind(port):
    kind = _socket.SOCK_STREAM if port["Protocol"] == "tcp" else _socket.SOCK_DGRAM
    reservation = _socket.socket(_socket.AF_INET, kind)
    address = port["HostIp"] or "0.0.0.0"
    try:
        reservation.bind((address, int(port["HostPort"] or 0)))
    except OSError as error:
        reservation.close()
        wanted = f"{address}:{port['HostPort'] or 0}/{port['Protocol']}"
        if error.errno == 98:  # EADDRINUSE
            raise host.EngineError(f"Bind for {wanted} failed: port is already allocated")
        raise host.EngineError(f"cannot publish {wanted}: {error.strerror}")
    port["HostPort"] = str(reservation.getsockname()[1])
    return reservation


def _close(sockets):
    for reservation in sockets:
        reservation.close()


def _check_port_number(text, spec):
    if "-" in text:
        raise host.EngineError(f"invalid port spec {spec!r}: port ranges are not supported")
    if not host.is_decimal(text) or not 1 <= int(text) <= 65535:
        raise host.EngineError(f"invalid port spec {spec!r}: {text!r} is not a port "
                               "number (1-65535)")


def _parse_address(text, what):
    import ipaddress

    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise host.EngineError(f"invalid {what} {text!r}: expected an IPv4 address")


# -- names: /etc/hosts and /etc/resolv.conf -------------------------------
#
# These files live in the container's directory and are bind-mounted over
# the image's.  A bind mount pins the inode, so they are rewritten in place
# (open with "w" truncates the same file); replacing them with rename(2)
# would leave the container looking at the old one.

def parse_extra_host(entry):
    """Split an ``--add-host NAME:IP`` value; ``host-gateway`` means the gateway."""
    name, separator, address = entry.partition(":")
    if not separator or not name or not address:
        raise host.EngineError(f"invalid --add-host {entry!r}: expected NAME:IP")
    if address != "host-gateway":
        _parse_address(address, "--add-host address")
    return name, address


def hosts_text(record, container_id):
    """Return the ``/etc/hosts`` of one container on a bridge network."""
    endpoint = record["Endpoints"][container_id]
    lines = [*_localhost_lines(), _hosts_line(endpoint["IPAddress"], _names_of(endpoint))]
    if record["Name"] != DEFAULT_NETWORK:
        # Name resolution between containers is a feature of user-defined
        # networks only, as in Docker.
        for peer_id, peer in sorted(record["Endpoints"].items()):
            if peer_id != container_id:
                lines.append(_hosts_line(peer["IPAddress"], _names_of(peer)))
    lines += _extra_host_lines(endpoint.get("ExtraHosts", ()), record["Gateway"])
    return "".join(lines)


def _write_all_name_files(record, request=None, container_id=None):
    """Rewrite the hosts file of the network's containers (all, or the newcomer)."""
    if request is not None:
        endpoint = record["Endpoints"][container_id]
        endpoint["ExtraHosts"] = list(request.get("add_hosts", ()))
        _write_resolv_conf(endpoint["Directory"], request.get("dns", ()))
    joined = [container_id] if record["Name"] == DEFAULT_NETWORK and container_id \
        else sorted(record["Endpoints"])
    for member in joined:
        directory = record["Endpoints"][member].get("Directory")
        if directory:
            _rewrite(directory, "hosts", hosts_text(record, member))


def _write_name_files(request, settings):
    """Write hosts and resolv.conf for ``--network none`` and ``host``."""
    directory = request.get("directory")
    if not directory:
        return
    if settings["NetworkMode"] == "host":
        with open("/etc/hosts") as handle:
            lines = [handle.read()]
    else:
        lines = _localhost_lines()
    lines += _extra_host_lines(request.get("add_hosts", ()), None)
    _rewrite(directory, "hosts", "".join(lines))
    _write_resolv_conf(directory, request.get("dns", ()))


def _write_resolv_conf(directory, servers):
    if not directory:
        return
    text = rootfs.host_resolv_conf()
    if servers:
        kept = [line for line in text.splitlines() if not line.startswith("nameserver")]
        text = "\n".join([*kept, *(f"nameserver {server}" for server in servers)]) + "\n"
    _rewrite(directory, "resolv.conf", text)


def _rewrite(directory, name, text):
    path = os.path.join(directory, name)
    if not os.path.isdir(directory):
        host.narrate(CHAPTER, f"skip {path}: the container's directory is gone")
        return
    host.narrate(CHAPTER, f"write {path}")
    with open(path, "w") as handle:
        handle.write(text)


def _localhost_lines():
    return ["127.0.0.1\tlocalhost\n", "::1\tlocalhost ip6-localhost ip6-loopback\n"]


def _names_of(endpoint):
    names = [endpoint["Hostname"], endpoint["Name"], *endpoint["Aliases"]]
    return list(dict.fromkeys(name for name in names if name))


def _hosts_line(address, names):
    return f"{address}\t{' '.join(names)}\n"


def _extra_host_lines(entries, gateway):
    lines = []
    for entry in entries:
        name, address = parse_extra_host(entry)
        if address == "host-gateway":
            if not gateway:
                raise host.EngineError("--add-host host-gateway needs a bridge network")
            address = gateway
        lines.append(_hosts_line(address, [name]))
    return lines


# -- preflight: say why packets would not flow ---------------------------

def preflight():
    """Return one sentence per reason container traffic would not flow (none: all well).

    Checks what silently breaks a container's network: forwarding off, and
    a FORWARD chain that drops by default with someone else's rules ahead
    of minidocker's, or in the other iptables backend, which packets
    traverse too.
    """
    problems = []
    with open(FORWARDING) as setting:
        if setting.read().strip() != "1":
            problems.append("net.ipv4.ip_forward is 0: the kernel will not forward "
                            "container packets past their bridge")
    problems += _forward_chain_problems(["iptables", "-w"], "iptables")
    other = _other_backend()
    if other:
        problems += _forward_chain_problems([other], other)
    return problems


def _forward_chain_problems(command, name):
    listing = host.run([*command, "-t", "filter", "-S", "FORWARD"], CHAPTER,
                       check=False, capture=True).stdout.decode().splitlines()
    if "-P FORWARD DROP" not in listing:
        return []
    rules = [line for line in listing if line.startswith("-A FORWARD")]
    if rules and rules[0] == "-A FORWARD -j MINIDOCKER-FORWARD":
        return []
    if name == "iptables":
        where = "rules ahead of MINIDOCKER-FORWARD" if rules else "no MINIDOCKER-FORWARD jump"
        return [f"the FORWARD chain's policy is DROP and it has {where}: container "
                "traffic may be dropped before minidocker's rules accept it"]
    return [f"{name}'s FORWARD chain drops by default: packets traverse both iptables "
            "backends, so that one drops container traffic too "
            f"(see '{name} -S FORWARD')"]


def _other_backend():
    """Name the other iptables backend if it holds a filter table, else None.

    With the nf_tables backend in use, legacy tables still filter packets
    when the ip_tables module is loaded; /proc/net/ip_tables_names lists
    them without loading anything.
    """
    import shutil

    try:
        with open("/proc/net/ip_tables_names") as names:
            legacy_tables = names.read().split()
    except OSError:
        return None
    version = host.run(["iptables", "--version"], CHAPTER, capture=True).stdout.decode()
    if "nf_tables" in version and "filter" in legacy_tables and shutil.which("iptables-legacy"):
        return "iptables-legacy"
    return None
