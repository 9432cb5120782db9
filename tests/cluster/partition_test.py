#!/usr/bin/env python3
"""Network partitions between three real tandemd nodes, each in its own network namespace
(tests/pylib/netlab.py: veth pairs to a private bridge, 10.213.0.0/24), driven by QEMU's
iSCSI client run inside the namespaces. Links are cut and healed while writers run; every
acknowledged write is recorded (and when it was acknowledged) and checked afterwards on every
copy's image file. Prints "N passed, N failed".

  a. The master's node is cut off from everyone: it stops acknowledging once its lease lapses,
     the controller promotes a replica only after that, a client through another node writes
     on; healed, the old master is demoted and resynced, and every copy holds exactly the new
     master's data (regions the old master wrote alone are overwritten). The writer's session
     on the old master's node stays up: after the demotion its writes reach the new master.
  b. The master is cut from one replica only: that copy is recorded out of sync before the
     master acknowledges more writes, the volume is degraded, writes go on; healed, the
     replica is delta-resynced.
  c. The controller is cut off alone: the other nodes' masters fence themselves when their
     leases lapse, the controller promotes its own in-sync replica (it is the only node it
     sees); no acknowledged write is lost, never two masters acknowledging; healed, all copies
     converge.

Needs root (ip netns). usage: partition_test.py --tandemd PATH --tandemctl PATH
"""
import argparse
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "pylib"))
import netlab  # noqa: E402
from tandem_cluster import copies_in_sync, sha256, volume, wait_for  # noqa: E402
from tandem_node import Node, finish  # noqa: E402

IQN = "iqn.2026-11.dev.tandem:"
HEARTBEAT_MS = 250
NODE_TIMEOUT_MS = 3000
LEASE_S = NODE_TIMEOUT_MS * 2 / 3 / 1000.0
BLOCK = 64 << 10


class Writer:
    """qemu-io inside a namespace, on a pty so each result line arrives as it is printed; every
    line is kept with the time it was read. acked() are the offsets whose write completed."""

    def __init__(self, ns, url, commands):
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "qemu-io", "-f", "raw"] +
                                     commands + [url], stdout=slave, stderr=slave,
                                     stdin=subprocess.DEVNULL)
        os.close(slave)
        self.fd = master
        self.lines = []  # (time, line)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        buf = b""
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
                if not ready:
                    if self.proc.poll() is not None:
                        break
                    continue
                chunk = os.read(self.fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with self.lock:
                    self.lines.append((time.time(), line.decode(errors="replace").strip()))

    def acked(self):
        """[(time, offset)] of every write reported done."""
        out = []
        with self.lock:
            for t, line in self.lines:
                if line.startswith("wrote ") and " at offset " in line:
                    out.append((t, int(line.rsplit(" ", 1)[1])))
        return out

    def failed(self):
        """[(time, line)] of every write reported failed."""
        with self.lock:
            return [(t, line) for t, line in self.lines if line.startswith("write failed")]

    def text(self):
        with self.lock:
            return "\n".join("%.3f %s" % (t, line) for t, line in self.lines)

    def wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(timeout=5)
        try:
            os.close(self.fd)
        except OSError:
            pass
        return self.proc.returncode


def pattern(i):
    return 1 + i % 250


def writes(first, count, start, sleep_ms):
    """qemu-io commands: block i (first..first+count-1) at start + i*BLOCK filled with
    pattern(i), a pause after each."""
    cmds = []
    for i in range(first, first + count):
        cmds += ["-c", "write -P 0x%02x %d %d" % (pattern(i), start + i * BLOCK, BLOCK)]
        if sleep_ms:
            cmds += ["-c", "sleep %d" % sleep_ms]
    return cmds


def log_time(path, needle):
    """Wall time (seconds) of the first line of a daemon log containing `needle`, or None.
    Lines start with %Y-%m-%dT%H:%M:%S.%e in local time."""
    with open(path, errors="replace") as f:
        for line in f:
            if needle in line:
                stamp = line.split(" ", 1)[0]
                try:
                    whole, ms = stamp.split(".")
                    return time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1e3
                except ValueError:
                    return None
    return None


def event_times(node, kind, volume_name):
    """Wall times of the controller's events of `kind` for `volume_name`."""
    p = node.ctl("--json", "events", "--limit", "1000", check=False)
    if p.returncode != 0:
        return []
    out = []
    for e in json.loads(p.stdout).get("events", []):
        if e.get("kind") == kind and e.get("volume") == volume_name:
            whole, rest = e["time"].split(".")
            out.append(time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) - time.timezone +
                       int(rest.rstrip("Z")) / 1e3)
    return out


class Cluster:
    def __init__(self, args, work, lab):
        self.lab = lab
        self.work = work
        self.args = args
        self.nodes = []

    def start(self):
        lab, args = self.lab, self.args
        timing = ["--heartbeat-ms", str(HEARTBEAT_MS)]
        n1 = Node(args.tandemd, args.tandemctl, self.work, lab.address("n1"), "n1",
                  timing + ["--node-timeout-ms", str(NODE_TIMEOUT_MS)], netns=lab.ns("n1"))
        self.nodes.append(n1)
        if not n1.start():
            return False
        token = open(os.path.join(n1.data, "join.token")).read().strip()
        for name in ("n2", "n3"):
            n = Node(args.tandemd, args.tandemctl, self.work, lab.address(name), name,
                     ["--join", n1.url, "--join-token", token] + timing, controller=n1,
                     netns=lab.ns(name))
            self.nodes.append(n)
            if not n.start():
                return False

        def online():
            p = n1.ctl("--json", "node", "list", check=False)
            if p.returncode != 0:
                return False
            nodes = json.loads(p.stdout)
            nodes = nodes.get("nodes", []) if isinstance(nodes, dict) else nodes
            return sum(1 for n in nodes if n.get("state") == "online") == 3
        return wait_for(online, 20)

    def stop(self):
        for n in reversed(self.nodes):
            n.stop()

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def url(self, via, vol):
        return "iscsi://%s/%s%s/0" % (self.lab.address(via), IQN, vol)

    def images(self, v):
        return {c["node"]: os.path.join(self.node(c["node"]).data, "volumes", v["id"] + ".img")
                for c in v["copies"]}


def master_of(v):
    m = [c["node"] for c in (v or {}).get("copies", []) if c.get("role") == "master"]
    return m[0] if m else None


def blocks_hold(path, acked, start):
    """Offsets in `acked` ([(time, offset)]) whose block in the image file does not hold its
    pattern (block i = (offset - start) / BLOCK)."""
    bad = []
    with open(path, "rb") as f:
        for _, off in acked:
            i = (off - start) // BLOCK
            f.seek(off)
            if f.read(BLOCK) != bytes([pattern(i)]) * BLOCK:
                bad.append(off)
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandemd", required=True)
    ap.add_argument("--tandemctl", required=True)
    args = ap.parse_args()
    for tool in ("qemu-io", "ip"):
        if not shutil.which(tool):
            print("%s not found (Debian qemu-utils + qemu-block-extra, iproute2)" % tool)
            print("0 passed, 1 failed")
            return 1
    why = netlab.available()
    if why:
        print("network namespaces unavailable: " + why)
        print("0 passed, 1 failed")
        return 1
    netlab.remove_stale("tpart")
    work = tempfile.mkdtemp(prefix="tandem-partition-")
    lab = netlab.Lab("tpart", ["n1", "n2", "n3"])
    cluster = Cluster(args, work, lab)
    results = []

    def record(name, ok, detail=""):
        results.append(bool(ok))
        print("%s %s" % ("ok  " if ok else "FAIL", name), flush=True)
        if not ok and detail:
            print(detail[-4000:], flush=True)
        return ok

    writers = []
    try:
        lab.create()
        if not cluster.start():
            record("cluster of three namespaced nodes starts", False, "logs in " + work)
            return finish(results, work)
        case_a(cluster, record, writers)
        case_b(cluster, record, writers)
        case_c(cluster, record, writers)
    finally:
        for w in writers:
            w.wait(0)
        cluster.stop()
        lab.destroy()
    return finish(results, work)


def presented(cluster, via, name):
    """True once the node `via` presents the volume to a client in its namespace."""
    return subprocess.run(["ip", "netns", "exec", cluster.lab.ns(via), "qemu-img", "info",
                           cluster.url(via, name)], capture_output=True,
                          timeout=60).returncode == 0


def create(cluster, record, name):
    """A 32 MiB volume with two replicas (a copy on each node), mastered on n2 and presented
    by every node."""
    n1 = cluster.node("n1")
    n1.ctl("volume", "create", name, "--size", "32MiB", "--block-size", "4096",
           "--label", "tandem/replicas=2", "--node", "n2")
    record("%s: three copies, all in sync, mastered on n2, presented everywhere" % name,
           wait_for(lambda: copies_in_sync(n1, name, 3), 30) and
           master_of(volume(n1, name)) == "n2" and
           all(wait_for(lambda: presented(cluster, n, name), 20) for n in ("n1", "n2", "n3")),
           json.dumps(volume(n1, name)))


def create_and_write(cluster, record, writers, name, count, before_cut):
    """create(), then a writer in n2's namespace (the master's node) of `count` blocks with
    pauses, once `before_cut` of them are acknowledged."""
    create(cluster, record, name)
    w = Writer(cluster.lab.ns("n2"), cluster.url("n2", name), writes(0, count, 0, 40))
    writers.append(w)
    record("%s: writes through the master acknowledged before the cut" % name,
           wait_for(lambda: len(w.acked()) >= before_cut, 30), w.text())
    return w


def fenced_before_promotion(cluster, record, name, cut):
    """The old master n2 logged its lease lapse (and so stopped acknowledging) before the
    controller logged the promotion: never two masters acknowledging at once."""
    n1 = cluster.node("n1")
    uuid = volume(n1, name)["id"]
    fenced = log_time(cluster.node("n2").log_path, "volume=%s master lease lapsed" % uuid)
    promoted_at = log_time(n1.log_path, "cluster: volume %s promoted" % name)
    record("%s: the old master fenced itself (lease lapsed) before the controller promoted"
           % name, fenced is not None and promoted_at is not None and fenced < promoted_at,
           "fenced %r promoted %r cut %r" % (fenced, promoted_at, cut))
    print("     %s: fenced %.2f s, promoted %.2f s after the cut (lease %.1f s)" %
          (name, (fenced or 0) - cut, (promoted_at or 0) - cut, LEASE_S), flush=True)


def converge(cluster, record, name, acked, start, extra=()):
    """After a heal: every copy in sync, `volume verify` identical, every image file
    byte-identical, and every acknowledged block (acked: [(time, offset)] from a writer whose
    blocks start at `start`; extra: more (acked, start) pairs) on every copy."""
    n1 = cluster.node("n1")
    record("%s: all three copies in sync after the heal" % name,
           wait_for(lambda: copies_in_sync(n1, name, 3), 60), json.dumps(volume(n1, name)))
    p = n1.ctl("volume", "verify", name, check=False)
    record("%s: volume verify: all copies identical" % name,
           p.returncode == 0 and "identical" in p.stdout, p.stdout + p.stderr)
    images = cluster.images(volume(n1, name))
    hashes = {n: sha256(path) for n, path in images.items()}
    record("%s: every copy's image file is byte-identical" % name,
           len(hashes) == 3 and len(set(hashes.values())) == 1, json.dumps(hashes))
    bad = {}
    for node, path in images.items():
        for a, s in ((acked, start),) + tuple(extra):
            missing = blocks_hold(path, a, s)
            if missing:
                bad[node] = bad.get(node, []) + missing
    record("%s: every acknowledged write is on every copy (%d blocks)" %
           (name, len(acked) + sum(len(a) for a, _ in extra)), not bad, json.dumps(bad))


def case_a(cluster, record, writers):
    """The master's node (n2) cut off from the controller and the other nodes."""
    lab, n1 = cluster.lab, cluster.node("n1")
    old = create_and_write(cluster, record, writers, "pa", 300, 15)
    lab.isolate("n2")
    cut = time.time()
    gen_before = volume(n1, "pa")["generation"]

    def promoted():
        v = volume(n1, "pa")
        return v is not None and master_of(v) not in (None, "n2") and v["generation"] > gen_before
    record("pa: the controller promotes a replica", wait_for(promoted, 30),
           json.dumps(volume(n1, "pa")))
    seen_promoted = time.time()
    fenced_before_promotion(cluster, record, "pa", cut)
    # A write through the isolated old master after the promotion: refused or left hanging,
    # never acknowledged.
    late = Writer(lab.ns("n2"), cluster.url("n2", "pa"), writes(350, 1, 0, 0))
    writers.append(late)
    # The new master takes writes through n3 (a client in n3's namespace).
    new = Writer(lab.ns("n3"), cluster.url("n3", "pa"), writes(0, 32, 24 << 20, 0))
    writers.append(new)
    rc = new.wait(60)
    record("pa: a client through n3 writes to the new master",
           rc == 0 and len(new.acked()) == 32, new.text())
    late_acked = late.acked()
    heal = time.time()
    lab.heal()
    late.wait(30)
    acked_during = [(t, o) for t, o in old.acked() if cut + LEASE_S < t < heal]
    record("pa: nothing acknowledged by the isolated old master after its lease ran out",
           not acked_during and not [a for a in late_acked if a[0] < heal],
           "old:\n%s\nlate:\n%s" % (old.text(), late.text()))
    after_promotion = [(t, o) for t, o in old.acked() if seen_promoted < t < heal]
    record("pa: no write acknowledged through the old master between promotion and heal",
           not after_promotion, old.text())
    # The catalogue made n2's copy a replica at the promotion; in sync means n2 took that
    # role and was resynced.
    record("pa: the old master comes back as a replica and is resynced",
           wait_for(lambda: copies_in_sync(n1, "pa", 3), 60), json.dumps(volume(n1, "pa")))
    old.wait(90)
    print("     pa: old writer: %d acknowledged (%d before the cut), %d failed (%d after the "
          "heal)" % (len(old.acked()), len([a for a in old.acked() if a[0] <= cut]),
                     len(old.failed()), len([f for f in old.failed() if f[0] > heal])),
          flush=True)
    # Its session stays up across the demotion: the write caught by the cut fails (NOT READY)
    # when the deposed master closes, every later one goes through the new master.
    record("pa: the session on the old master's node survives its demotion",
           len(old.failed()) <= 1 and len(old.acked()) + len(old.failed()) == 300 and
           any(t > heal for t, _ in old.acked()), old.text())
    # Through the old master's node again, now a forwarder to the new master.
    again = Writer(lab.ns("n2"), cluster.url("n2", "pa"), writes(360, 8, 0, 0))
    writers.append(again)
    rc = again.wait(60)
    record("pa: after the heal, writes through n2 reach the new master",
           rc == 0 and len(again.acked()) == 8, again.text())
    converge(cluster, record, "pa", old.acked(), 0, ((new.acked(), 24 << 20),
                                                     (late.acked(), 0), (again.acked(), 0)))


def case_b(cluster, record, writers):
    """The master (n2) cut from one replica (n3) only; the controller reaches both."""
    lab, n1 = cluster.lab, cluster.node("n1")
    w = create_and_write(cluster, record, writers, "pb", 100, 10)
    lab.cut("n2", "n3")
    cut = time.time()

    def n3_out():
        v = volume(n1, "pb") or {}
        return any(c["node"] == "n3" and c["state"] != "in-sync" for c in v.get("copies", []))
    record("pb: the controller records the cut replica out of sync", wait_for(n3_out, 30),
           json.dumps(volume(n1, "pb")))
    record("pb: the volume is degraded",
           wait_for(lambda: (volume(n1, "pb") or {}).get("state") == "degraded", 10),
           json.dumps(volume(n1, "pb")))
    record("pb: n2 is still the master (no promotion)", master_of(volume(n1, "pb")) == "n2",
           json.dumps(volume(n1, "pb")))
    before = len(w.acked())
    record("pb: writes go on without the cut replica",
           wait_for(lambda: len(w.acked()) >= before + 10, 30), w.text())
    recorded = event_times(n1, "copy-out-of-sync", "pb")
    # The write in flight at the cut waits for the replica's link to time out; any write
    # acknowledged well after the cut went without n3, so the catalogue must say so first.
    later = [t for t, _ in w.acked() if t > cut + 1.0]
    record("pb: the out-of-sync copy was recorded before any later write was acknowledged",
           recorded and later and min(recorded) <= min(later),
           "recorded %r first later ack %r cut %r" % (recorded, later[:1], cut))
    if later:
        print("     pb: writes stalled %.1f s at the cut (replica link timeout)" %
              (min(later) - cut), flush=True)
    lab.heal()
    rc = w.wait(90)
    record("pb: the writer finished with every write acknowledged",
           rc == 0 and len(w.acked()) == 100, w.text())
    converge(cluster, record, "pb", w.acked(), 0)


def case_c(cluster, record, writers):
    """The controller (n1) cut off alone."""
    lab, n1 = cluster.lab, cluster.node("n1")
    w = create_and_write(cluster, record, writers, "pc", 120, 10)
    lab.isolate("n1")
    cut = time.time()
    record("pc: the controller promotes its own in-sync replica (the only node it sees)",
           wait_for(lambda: master_of(volume(n1, "pc")) == "n1", 30),
           json.dumps(volume(n1, "pc")))
    fenced_before_promotion(cluster, record, "pc", cut)
    new = Writer(lab.ns("n1"), cluster.url("n1", "pc"), writes(0, 16, 16 << 20, 0))
    writers.append(new)
    rc = new.wait(60)
    record("pc: a client on the controller's node writes to the promoted copy",
           rc == 0 and len(new.acked()) == 16, new.text())
    heal = time.time()
    acked_during = [(t, o) for t, o in w.acked() if cut + LEASE_S < t < heal]
    record("pc: nothing acknowledged by n2 after its lease ran out", not acked_during, w.text())
    lab.heal()
    w.wait(90)
    converge(cluster, record, "pc", w.acked(), 0, ((new.acked(), 16 << 20),))


if __name__ == "__main__":
    sys.exit(main())
