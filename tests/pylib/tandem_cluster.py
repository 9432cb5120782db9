"""A cluster of real tandemd nodes for the Python cluster tests: a controller n1 and joined
nodes n2..nN on distinct 127.x.y.z addresses, plus the catalogue queries the tests poll.
Standard library only."""
import hashlib
import json
import os
import time

from tandem_node import Node, loopback_addresses

IQN = "iqn.2026-11.dev.tandem:"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wait_for(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)  # polling an observable condition with a deadline
    return pred()


class Cluster:
    """`second_octet` picks the address block (distinct per test script); `controller_args`
    and `node_args` are extra tandemd arguments."""

    def __init__(self, args, work, second_octet=252, count=3,
                 controller_args=("--heartbeat-ms", "200", "--node-timeout-ms", "2000"),
                 node_args=("--heartbeat-ms", "200")):
        self.addrs = loopback_addresses(second_octet, count)
        self.work = work
        self.args = args
        self.count = count
        self.node_args = list(node_args)
        self.n1 = Node(args.tandemd, args.tandemctl, work, self.addrs[0], "n1",
                       list(controller_args))
        self.nodes = [self.n1]

    def start(self):
        if not self.n1.start():
            return False
        token = open(os.path.join(self.n1.data, "join.token")).read().strip()
        for i in range(1, self.count):
            n = Node(self.args.tandemd, self.args.tandemctl, self.work, self.addrs[i],
                     "n%d" % (i + 1),
                     ["--join", self.n1.url, "--join-token", token] + self.node_args,
                     controller=self.n1)
            if not n.start():
                return False
            self.nodes.append(n)
        return wait_for(lambda: len(online_nodes(self.n1)) == self.count, 20)

    def stop(self):
        for n in reversed(self.nodes):
            n.stop()

    def start_or_report(self):
        """start(); when the cluster does not come up, stops what started and prints the
        failure as a test result line ("0 passed, 1 failed"). True when it is up."""
        if self.start():
            return True
        print("cluster did not start; logs in " + self.work)
        self.stop()
        print("0 passed, 1 failed")
        return False

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)


def online_nodes(node):
    p = node.ctl("--json", "node", "list", check=False)
    if p.returncode != 0:
        return []
    nodes = json.loads(p.stdout)
    if isinstance(nodes, dict):
        nodes = nodes.get("nodes", [])
    return [n for n in nodes if n.get("state") == "online"]


def volume(node, name):
    p = node.ctl("--json", "volume", "get", name, check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


def copies_in_sync(node, name, count):
    v = volume(node, name)
    if not v:
        return False
    copies = v.get("copies", [])
    return len(copies) == count and all(c.get("state") == "in-sync" for c in copies)


def image_paths(cluster, v):
    """Every copy's image file: (node name, path)."""
    out = []
    for c in v["copies"]:
        n = cluster.node(c["node"])
        out.append((c["node"], os.path.join(n.data, "volumes", v["id"] + ".img")))
    return out
