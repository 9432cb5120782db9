#!/usr/bin/env python3
"""Self-healing under a stamping writer: three real tandemd nodes on 127.x.y.z, volumes written
by tandem-stamp (each block carries its LBA, a sequence number, the writer's id and a CRC; the
writer logs what was acknowledged) while nodes are SIGKILLed and restarted:
  a. the master dies mid-stream: the writer's session (through another node) survives, every
     acknowledged block reads back;
  b. a replica dies, 1% of the volume is written, it returns: the resync is a delta of
     4 KiB blocks (checksum-compared), bytes within a small factor of what changed;
  c. soft and threshold modes halt (NOT READY) or keep serving as the seed says, and resume
     by themselves;
  d. both replicas die: hard turns read-only, alwayson keeps serving; both heal on return;
  e. the controller restarts while a master serves: a delay at most, no promotion, nothing lost;
  f. a replica's node "reboots" (restarted with another boot id, --boot-id-file) while the
     master is frozen: its copy is out of sync at once, the intact replica is promoted when
     the master is declared lost, never the rebooted one, and both are resynced.
Every case ends with `tandemctl volume verify` finding all copies identical.
Prints "N passed, N failed".

usage: healing_test.py --tandemd PATH --tandemctl PATH --stamp PATH
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tandem_node import finish  # noqa: E402
from tandem_cluster import IQN, Cluster, copies_in_sync, volume, wait_for  # noqa: E402

REGION = 1 << 20  # the region map's granularity (backend/repl/region_map.h)


class Stamp:
    """One tandem-stamp run (a writer, or --verify) against a volume through a node."""

    def __init__(self, path, work):
        self.path = path
        self.work = work
        self.runs = 0

    def url(self, node, vol):
        return "iscsi://%s/%s%s/0" % (node.address, IQN, vol)

    def start(self, node, vol, *args):
        self.runs += 1
        log = os.path.join(self.work, "%s-%d.stamp" % (vol, self.runs))
        p = subprocess.Popen([self.path, "--url", self.url(node, vol), "--log", log] +
                             [str(a) for a in args],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        p.log = log
        return p

    @staticmethod
    def finish(p, timeout=120):
        """(exit code, summary dict, output)."""
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        summary = {}
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                summary = json.loads(line)
                break
        return p.returncode, summary, out

    def run(self, node, vol, *args, timeout=120):
        return self.finish(self.start(node, vol, *args), timeout)

    def verify(self, node, vol, log, blocks):
        p = subprocess.run([self.path, "--url", self.url(node, vol), "--log", log, "--verify",
                            "--blocks", str(blocks), "--retry-seconds", "30"],
                           capture_output=True, text=True, timeout=180)
        return p.returncode == 0, p.stdout + p.stderr


def log_lines(path, kind):
    """[(lba, seq, time, detail)] of one kind from a tandem-stamp log."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            parts = line.split(None, 4)
            if len(parts) >= 4 and parts[0] == kind:
                out.append((int(parts[1]), int(parts[2]), float(parts[3]),
                            parts[4].strip() if len(parts) > 4 else ""))
    return out


def metric(node, key):
    req = urllib.request.Request(node.url + "/metrics",
                                 headers={"Authorization": "Bearer " + node.token})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[1])
    return 0.0


def events(node):
    p = node.ctl("--json", "events", "--since", "0", "--limit", "1000", check=False)
    if p.returncode != 0:
        return []
    doc = json.loads(p.stdout)
    return doc.get("events", []) if isinstance(doc, dict) else doc


def dirty_regions(path):
    """Entries of a region map file (backend/repl/region_map.h: a 4 KiB header, then one
    little-endian u64 per region) with the dirty bit (63) set; -1 when unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return -1
    if len(data) <= 4096:
        return -1
    return sum(1 for off in range(4096, len(data) - 7, 8) if data[off + 7] & 0x80)


def settled(node, name, count, min_seq):
    """Every copy in sync and each having applied at least `min_seq`: the catalogue calls a
    fresh copy in sync before its node has even opened it, so "in sync" alone can be stale."""
    v = volume(node, name)
    copies = (v or {}).get("copies", [])
    return (len(copies) == count and all(c.get("state") == "in-sync" for c in copies) and
            all(c.get("applied_seq", 0) >= min_seq for c in copies))


def state(node, name):
    return (volume(node, name) or {}).get("state")


def master_of(node, name):
    v = volume(node, name) or {}
    m = [c["node"] for c in v.get("copies", []) if c.get("role") == "master"]
    return m[0] if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandemd", required=True)
    ap.add_argument("--tandemctl", required=True)
    ap.add_argument("--stamp", required=True)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tandem-healing-")
    cluster = Cluster(args, work, second_octet=251)
    stamp = Stamp(args.stamp, work)
    results = []
    t_begin = time.time()

    def record(name, ok, detail=""):
        results.append(bool(ok))
        print("%s %s" % ("ok  " if ok else "FAIL", name), flush=True)
        if not ok and detail:
            print(str(detail)[-3000:])
        return ok

    def verified(vol, copies):
        ok = wait_for(lambda: copies_in_sync(cluster.n1, vol, copies), 60)
        p = cluster.n1.ctl("volume", "verify", vol, check=False)
        return record("%s: every copy in sync, volume verify finds them identical" % vol,
                      ok and p.returncode == 0 and "identical" in p.stdout,
                      json.dumps(volume(cluster.n1, vol)) + p.stdout + p.stderr)

    def presents(node, vol):
        return subprocess.run(["iscsi-inq", stamp.url(node, vol)], capture_output=True,
                              timeout=30).returncode == 0

    def create(vol, size, master, *labels):
        """Creates the volume, writes 100 stamped blocks through its master and waits until
        every copy has applied them (a copy's first writes may send it through a resync)."""
        cmd = ["volume", "create", vol, "--size", size, "--block-size", "4096", "--node", master]
        for label in labels:
            cmd += ["--label", label]
        p = cluster.n1.ctl(*cmd, check=False)
        copies = 1 + int([x for x in labels if x.startswith("tandem/replicas=")][0][-1])
        wait_for(lambda: presents(cluster.node(master), vol), 15)  # after its next heartbeat
        rc, s, out = stamp.run(cluster.node(master), vol, "--blocks", 256, "--writes", 100)
        return record("%s: created, written, %d copies in sync" % (vol, copies),
                      p.returncode == 0 and rc == 0 and
                      wait_for(lambda: settled(cluster.n1, vol, copies, 100), 30),
                      p.stdout + p.stderr + out + json.dumps(volume(cluster.n1, vol)))

    if not cluster.start():
        print("cluster did not start; logs in " + work)
        cluster.stop()
        print("0 passed, 1 failed")
        return 1
    n1, n2, n3 = cluster.n1, cluster.node("n2"), cluster.node("n3")
    try:
        # --- a. The master dies mid-stream; the writer goes through n3, which forwards.
        create("ha", "16MiB", "n2", "tandem/replicas=2")
        record("a: n3 presents the volume", wait_for(lambda: presents(n3, "ha"), 15))
        w = stamp.start(n3, "ha", "--blocks", 4096, "--qd", 4, "--duration", 8,
                        "--rate", 400)
        wait_for(lambda: len(log_lines(w.log, "A")) >= 200 or w.poll() is not None, 15)
        n2.kill()
        killed = time.time()
        rc, s, out = Stamp.finish(w)
        acks = log_lines(w.log, "A")
        after = [t for _, _, t, _ in acks if t > killed]
        record("a: the writer's session survived the master's death: no failed write, "
               "no reconnect, writes acknowledged after the kill",
               rc == 0 and s.get("failed") == 0 and s.get("reconnects") == 0 and after, out)
        if after:
            print("     a: first write completed %.2f s after SIGKILL of the master "
                  "(%d acknowledged, %d retried, longest gap %.2f s)" %
                  (min(after) - killed, s.get("acked", 0), s.get("retries", 0),
                   s.get("max_gap_s", 0)))
        record("a: a replica was promoted",
               wait_for(lambda: master_of(n1, "ha") not in (None, "n2"), 15),
               json.dumps(volume(n1, "ha")))
        ok, out = stamp.verify(n3, "ha", w.log, 4096)
        record("a: every acknowledged block reads back (stamp verify)", ok, out)
        n2.start()
        verified("ha", 3)
        n1.ctl("volume", "delete", "ha", check=False)

        # --- b. A replica dies, 1% of the volume is written, it returns: a delta resync.
        create("hb", "64MiB", "n1", "tandem/replicas=2")
        rc, s, out = stamp.run(n1, "hb", "--blocks", 16384, "--qd", 8, "--writes", 1000,
                               "--duration", 60)
        record("b: data written while healthy, every copy applied it",
               rc == 0 and s.get("acked") == 1000 and
               wait_for(lambda: settled(n1, "hb", 3, 1100), 30),
               out + json.dumps(volume(n1, "hb")))
        hb_map = os.path.join(n3.data, "volumes", volume(n1, "hb")["id"] + ".map")
        record("b: n3's region map ends clean (the master's idle flushes)",
               wait_for(lambda: dirty_regions(hb_map) == 0, 20), dirty_regions(hb_map))
        n3.kill()
        # 1% of 64 MiB: 164 blocks of 4 KiB at random LBAs.
        w = stamp.start(n1, "hb", "--blocks", 16384, "--qd", 8, "--writes", 164,
                        "--duration", 60)
        rc, s, out = Stamp.finish(w)
        record("b: 1% of the volume written with the replica down", rc == 0 and
               s.get("acked") == 164, out)
        blocks = {lba for lba, _, _, _ in log_lines(w.log, "A")}  # two writes may hit one
        changed = len(blocks) * 4096
        regions = {lba * 4096 // REGION for lba in blocks}
        raw_key = 'tandem_replication_sent_bytes{kind="raw"}'
        before = metric(n1, raw_key)
        n3.start()
        synced = wait_for(lambda: copies_in_sync(n1, "hb", 3), 60)
        sent = metric(n1, raw_key) - before
        # The copy's side of the resync: its per-4 KiB hashes of each changed region (plus
        # its summaries, ACKs and heartbeats: everything n3 sent since its restart).
        answered = metric(n3, raw_key)
        ratio = sent / changed
        total_ratio = (sent + answered) / changed
        print("     b: resync sent %d bytes (master) + %d (copy: hashes, summaries) for %d "
              "changed in %d regions: %.2f x changed, %.2f x with the hashes; whole regions "
              "would have been %.1f x" % (sent, answered, changed, len(regions), ratio,
                                           total_ratio, len(regions) * REGION / changed))
        record("b: the returning replica was resynced with a delta of changed blocks (bytes "
               "both ways <= 4 x the changed bytes)",
               synced and changed <= sent and total_ratio <= 4.0,
               "sent %d answered %d changed %d synced %s" % (sent, answered, changed, synced))
        ok, out = stamp.verify(n1, "hb", w.log, 16384)
        record("b: the 1% reads back", ok, out)
        verified("hb", 3)
        n1.ctl("volume", "delete", "hb", check=False)

        # --- c + d. Failure modes, 2 s grace, masters on n1. n3 dies: soft (needs 1 of 2)
        # keeps serving, threshold 2 halts, hard turns read-only. n2 dies too: soft halts,
        # alwayson keeps serving. Both return: everything resumes (hard after a new login).
        grace = "tandem/failure-grace=2"
        create("cs", "16MiB", "n1", "tandem/replicas=2", "tandem/failure-mode=soft", grace)
        create("ct", "16MiB", "n1", "tandem/replicas=2", "tandem/failure-mode=threshold",
               "tandem/failure-threshold=2", grace)
        create("dh", "16MiB", "n1", "tandem/replicas=2", grace)
        create("da", "16MiB", "n1", "tandem/replicas=2", "tandem/failure-mode=alwayson", grace)
        vols = ("cs", "ct", "dh", "da")
        logs = {}
        for v in vols:
            rc, s, out = stamp.run(n1, v, "--blocks", 4096, "--qd", 4, "--writes", 200)
            logs[v] = [rc == 0 and s.get("acked") == 200, out]
        record("cd: written while healthy", all(ok for ok, _ in logs.values()),
               "\n".join(out for _, out in logs.values()))
        n3.kill()
        record("c: threshold 2 with one of two replicas: halted after the grace",
               wait_for(lambda: state(n1, "ct") == "halted", 20), json.dumps(volume(n1, "ct")))
        record("d: hard with one of two replicas: read-only after the grace",
               wait_for(lambda: state(n1, "dh") == "read-only", 20),
               json.dumps(volume(n1, "dh")))
        rc, s, out = stamp.run(n1, "cs", "--blocks", 4096, "--qd", 4, "--writes", 100)
        record("c: soft with one of two replicas keeps serving (degraded)",
               rc == 0 and s.get("acked") == 100 and state(n1, "cs") == "degraded",
               out + json.dumps(volume(n1, "cs")))
        rc, s, out = stamp.run(n1, "ct", "--blocks", 4096, "--qd", 1, "--writes", 1,
                               "--retry-seconds", 1)
        record("c: the writer on the halted volume sees NOT READY",
               rc != 0 and "NOT READY" in s.get("first_failure", ""), out)
        rc, s, out = stamp.run(n1, "dh", "--blocks", 4096, "--qd", 1, "--writes", 1)
        record("d: the writer on the read-only volume sees DATA PROTECT",
               rc != 0 and "DATA PROTECT" in s.get("first_failure", ""), out)
        n2.kill()
        record("c: soft with no replica left: halted after the grace",
               wait_for(lambda: state(n1, "cs") == "halted", 20), json.dumps(volume(n1, "cs")))
        rc, s, out = stamp.run(n1, "da", "--blocks", 4096, "--qd", 4, "--writes", 100)
        record("d: alwayson with both replicas gone keeps serving",
               rc == 0 and s.get("acked") == 100, out)
        # Writers that stay logged in across the return: soft and threshold resume by
        # themselves (retries of NOT READY, no new login).
        held = {v: stamp.start(n1, v, "--blocks", 4096, "--qd", 2, "--writes", 20,
                               "--duration", 60, "--retry-seconds", 60) for v in ("cs", "ct")}
        record("c: writers that log in while halted are held with NOT READY",
               wait_for(lambda: all(any("NOT READY" in d for _, _, _, d in
                                        log_lines(w.log, "R")) for w in held.values()), 20))
        n2.start()
        n3.start()
        for v, w in held.items():
            rc, s, out = Stamp.finish(w, timeout=90)
            record("c: %s resumed by itself: the halted writes completed in the same "
                   "session after NOT READY" % v,
                   rc == 0 and s.get("acked") == 20 and s.get("reconnects") == 0 and
                   any("NOT READY" in d for _, _, _, d in log_lines(w.log, "R")), out)
            ok, out = stamp.verify(n1, v, w.log, 4096)
            record("c: %s: acknowledged blocks read back" % v, ok, out)
        record("d: hard: back in sync, a new login writes again",
               wait_for(lambda: copies_in_sync(n1, "dh", 3), 60) and
               stamp.run(n1, "dh", "--blocks", 4096, "--writes", 10)[0] == 0)
        for v in vols:
            verified(v, 3)
            n1.ctl("volume", "delete", v, check=False)

        # --- e. The controller restarts while n2 masters a volume written through n3.
        create("ce", "16MiB", "n2", "tandem/replicas=2")
        record("e: n3 presents the volume", wait_for(lambda: presents(n3, "ce"), 15))
        gen = (volume(n1, "ce") or {}).get("generation")
        seen = max([e.get("seq", 0) for e in events(n1)] or [0])
        w = stamp.start(n3, "ce", "--blocks", 4096, "--qd", 4, "--duration", 12,
                        "--rate", 300)
        wait_for(lambda: len(log_lines(w.log, "A")) >= 100 or w.poll() is not None, 15)
        n1.kill()
        down = time.time()
        # Longer than the node timeout (2 s): the lease lapses everywhere, and a controller
        # judging heartbeats recorded before its death would declare every node lost.
        time.sleep(4)
        n1.start()
        up = time.time()
        rc, s, out = Stamp.finish(w)
        print("     e: controller down %.1f s; the writer's longest gap %.2f s, %d retries" %
              (up - down, s.get("max_gap_s", 0), s.get("retries", 0)))
        record("e: the writer through n3 saw a delay only: no error to retry, no failure, "
               "the same session",
               rc == 0 and s.get("failed") == 0 and s.get("retries") == 0 and
               s.get("reconnects") == 0 and s.get("acked", 0) > 100, out)
        v = volume(n1, "ce") or {}
        record("e: no promotion and no generation bump",
               master_of(n1, "ce") == "n2" and v.get("generation") == gen, json.dumps(v))
        lost = [e for e in events(n1) if e.get("seq", 0) > seen and
                e.get("kind") in ("node-offline", "volume-promoted", "master-promoted")]
        record("e: the restarted controller declared no node lost", not lost, json.dumps(lost))
        ok, out = stamp.verify(n3, "ce", w.log, 4096)
        record("e: every acknowledged block reads back", ok, out)
        verified("ce", 3)
        n1.ctl("volume", "delete", "ce", check=False)

        # --- f. A replica's node reboots (a new boot id) while the master is frozen (SIGSTOP:
        # it cannot record anything), so the catalogue still calls the replica in sync.
        create("pf", "16MiB", "n2", "tandem/replicas=2")
        rc, s, out = stamp.run(n2, "pf", "--blocks", 4096, "--qd", 4, "--writes", 300)
        record("f: written while healthy, every copy applied it",
               rc == 0 and s.get("acked") == 300 and
               wait_for(lambda: settled(n1, "pf", 3, 400), 30), out)
        flog = stamp.runs
        gen = (volume(n1, "pf") or {}).get("generation")
        seen = max([e.get("seq", 0) for e in events(n1)] or [0])
        boot_file = os.path.join(work, "n3.boot_id")
        with open(boot_file, "w") as f:
            f.write(str(uuid.uuid4()) + "\n")
        n2.proc.send_signal(signal.SIGSTOP)
        frozen = time.time()
        try:
            n3.kill()
            n3.extra += ["--boot-id-file", boot_file]
            n3.start()
            back = time.time() - frozen

            def recorded(kind, text=""):
                return any(e.get("kind") == kind and e.get("node") == "n3" and
                           e.get("seq", 0) > seen and text in e.get("message", "")
                           for e in events(n1))
            # Normally the reboot is what takes the copy out of sync ("its node rebooted");
            # on a slow machine n3 may come back only after n1 was promoted and recorded it
            # out of sync itself.
            record("f: n3's reboot is recorded and its copy is out of sync at once "
                   "(back %.1f s after the master froze)" % back,
                   wait_for(lambda: recorded("node-rebooted") and
                            recorded("copy-out-of-sync"), 10),
                   json.dumps(events(n1)[-10:]))
            promoted = wait_for(lambda: master_of(n1, "pf") not in (None, "n2"), 15)
            v = volume(n1, "pf") or {}
            record("f: the frozen master is replaced by the intact replica n1, never by "
                   "the rebooted n3",
                   promoted and master_of(n1, "pf") == "n1" and v.get("generation") == gen + 1,
                   json.dumps(v))
        finally:
            n2.proc.send_signal(signal.SIGCONT)
        ok, out = stamp.verify(n1, "pf", os.path.join(work, "pf-%d.stamp" % flog), 4096)
        record("f: every block acknowledged before the freeze reads back from the new master",
               ok, out)
        rc, s, out = stamp.run(n1, "pf", "--blocks", 4096, "--qd", 4, "--writes", 100)
        record("f: the new master writes", rc == 0 and s.get("acked") == 100, out)
        record("f: n3 (rebooted) and n2 (deposed) are resynced",
               wait_for(lambda: settled(n1, "pf", 3, 0), 60), json.dumps(volume(n1, "pf")))
        verified("pf", 3)
    finally:
        cluster.stop()
    print("     wall time %.0f s" % (time.time() - t_begin))
    return finish(results, work)


if __name__ == "__main__":
    sys.exit(main())
