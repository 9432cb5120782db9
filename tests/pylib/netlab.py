"""A private network for cluster tests that cut links: one network namespace per host, each
joined by a veth pair to a bridge in a namespace of its own, on 10.213.0.0/24. Nothing is
created in the caller's namespace (so the addresses cannot clash with anything and are never
routed anywhere); every name carries the test's pid and a prefix, so tests run side by side.

Cuts: isolate(host) takes the host's bridge port down (it reaches nobody; its own address
still answers clients inside its namespace); cut(a, b) drops a<->b both ways with blackhole
routes while both keep reaching everyone else. heal() undoes every cut.

Needs root and iproute2 (`ip`). Standard library only. Always call destroy() (try/finally):
it deletes every namespace, which also removes the veths and the bridge."""
import os
import subprocess

SUBNET = "10.213.0."


def _ip(*args, check=True):
    p = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), p.stderr.strip()))
    return p


def available():
    """'' when namespaces can be made here, otherwise why not."""
    if os.geteuid() != 0:
        return "not root"
    try:
        probe = "tlprobe%d" % os.getpid()
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        return "ip netns unusable: %s" % e
    return ""


def remove_stale(prefix):
    """Deletes namespaces `prefix<pid>...` left by a run of this test that was killed (its pid
    is gone). Only names of this prefix whose pid no longer runs are touched."""
    p = _ip("netns", "list", check=False)
    for line in p.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(prefix):
            continue
        digits = ""
        for ch in name[len(prefix):]:
            if not ch.isdigit():
                break
            digits += ch
        if digits and not os.path.exists("/proc/" + digits):
            _ip("netns", "del", name, check=False)


class Lab:
    def __init__(self, prefix, hosts):
        """prefix: a short tag for this test (namespace names are prefix + pid + suffix).
        hosts: host names; host i gets address 10.213.0.(i+1)."""
        self.tag = "%s%d" % (prefix, os.getpid())
        self.hosts = list(hosts)
        self.bridge_ns = self.tag + "br"
        self.created = []
        self.blackholes = []  # (host, address)
        self.isolated = set()

    def ns(self, host):
        return "%s%s" % (self.tag, host)

    def address(self, host):
        return SUBNET + str(1 + self.hosts.index(host))

    def port(self, host):
        return "p%d" % (1 + self.hosts.index(host))

    def create(self):
        _ip("netns", "add", self.bridge_ns)
        self.created.append(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for h in self.hosts:
            ns = self.ns(h)
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("link", "add", self.port(h), "netns", self.bridge_ns, "type", "veth", "peer",
                "name", "eth0", "netns", ns)
            _ip("-n", self.bridge_ns, "link", "set", self.port(h), "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", self.address(h) + "/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def isolate(self, host):
        _ip("-n", self.bridge_ns, "link", "set", self.port(host), "down")
        self.isolated.add(host)

    def cut(self, a, b):
        for x, y in ((a, b), (b, a)):
            _ip("-n", self.ns(x), "route", "add", "blackhole", self.address(y) + "/32")
            self.blackholes.append((x, self.address(y)))

    def heal(self):
        for h in sorted(self.isolated):
            _ip("-n", self.bridge_ns, "link", "set", self.port(h), "up")
        self.isolated.clear()
        for h, addr in self.blackholes:
            _ip("-n", self.ns(h), "route", "del", "blackhole", addr + "/32")
        self.blackholes.clear()

    def destroy(self):
        for ns in reversed(self.created):
            _ip("netns", "del", ns, check=False)
        self.created.clear()
