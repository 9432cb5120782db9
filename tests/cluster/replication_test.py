#!/usr/bin/env python3
"""Three real tandemd nodes on 127.x.y.z (a controller and two joined nodes) replicating
volumes synchronously over TLS on tcp/5703, driven by real iSCSI clients (QEMU's libiscsi
driver). Checks that every copy's image file ends byte-identical to what the initiator wrote,
that replicas can be added and removed while writes go on, and that `volume verify` agrees.
Prints "N passed, N failed".

usage: replication_test.py --tandemd PATH --tandemctl PATH
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tandem_node import finish  # noqa: E402
from tandem_cluster import (IQN, Cluster, copies_in_sync, image_paths, sha256,  # noqa: E402
                            volume, wait_for)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandemd", required=True)
    ap.add_argument("--tandemctl", required=True)
    args = ap.parse_args()
    for tool in ("qemu-img", "qemu-io"):
        if not shutil.which(tool):
            print("%s not found (Debian qemu-utils + qemu-block-extra)" % tool)
            print("0 passed, 1 failed")
            return 1
    work = tempfile.mkdtemp(prefix="tandem-cluster-")
    cluster = Cluster(args, work)
    results = []

    def record(name, ok, detail=""):
        results.append(bool(ok))
        print("%s %s" % ("ok  " if ok else "FAIL", name))
        if not ok and detail:
            print(detail[-3000:])
        return ok

    def run(name, cmd, expect_in=None, timeout=180):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        ok = p.returncode == 0 and (expect_in is None or expect_in in p.stdout)
        return record(name, ok, p.stdout + p.stderr)

    if not cluster.start():
        print("cluster did not start; logs in " + work)
        cluster.stop()
        print("0 passed, 1 failed")
        return 1
    n1, n2 = cluster.n1, cluster.node("n2")
    try:
        # --- A volume with two replicas: writes through the master reach every copy.
        n1.ctl("volume", "create", "r2", "--size", "64MiB", "--block-size", "4096",
               "--label", "tandem/replicas=2", "--node", "n1")
        record("r2: three copies on three nodes, all in sync",
               wait_for(lambda: copies_in_sync(n1, "r2", 3), 20), json.dumps(volume(n1, "r2")))
        v = volume(n1, "r2")
        record("r2: copies on distinct nodes",
               len({c["node"] for c in v["copies"]}) == 3, json.dumps(v))
        image = os.path.join(work, "r2.raw")
        with open(image, "wb") as f:
            f.write(os.urandom(20 << 20))
            f.write(b"\0" * (20 << 20))
            f.write(os.urandom(24 << 20))
        url = "iscsi://%s/%sr2/0" % (n1.address, IQN)
        run("r2: qemu-img convert onto the master",
            ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", image, url])
        run("r2: qemu-img compare reads it back", ["qemu-img", "compare", "-f", "raw", "-F",
                                                   "raw", image, url], "Images are identical")
        want = sha256(image)
        got = {name: sha256(p) for name, p in image_paths(cluster, volume(n1, "r2"))}
        record("r2: every copy's image is byte-identical to what was written",
               all(h == want for h in got.values()) and len(got) == 3, json.dumps(got))
        p = n1.ctl("volume", "verify", "r2", check=False)
        record("r2: volume verify finds all copies identical",
               p.returncode == 0 and "identical" in p.stdout, p.stdout + p.stderr)

        # --- Through a node that is not the master: forwarded to the master over 5703.
        url2 = "iscsi://%s/%sr2/0" % (n2.address, IQN)
        run("r2: qemu-io writes through n2 (not the master)",
            ["qemu-io", "-f", "raw", "-c", "write -P 0x6b 1M 2M", "-c", "write -P 0x3c 50M 1M",
             url2])
        run("r2: the master reads n2's writes",
            ["qemu-io", "-f", "raw", "-c", "read -P 0x6b 1M 2M", "-c", "read -P 0x3c 50M 1M",
             url])
        paths = image_paths(cluster, volume(n1, "r2"))
        hashes = {name: sha256(p) for name, p in paths}
        record("r2: copies identical after forwarded writes", len(set(hashes.values())) == 1,
               json.dumps(hashes))

        # --- Every node presents the same identity (VPD 0x83) for the volume.
        inq = {}
        for n in (n1, n2, cluster.node("n3")):
            p = subprocess.run(["iscsi-inq", "-e", "1", "-c", "0x83",
                                "iscsi://%s/%sr2/0" % (n.address, IQN)],
                               capture_output=True, text=True, timeout=60)
            inq[n.name] = p.stdout if p.returncode == 0 else "error: " + p.stderr
        record("r2: VPD 0x83 identical on every node",
               len(set(inq.values())) == 1 and "error" not in inq["n1"] and inq["n1"].strip(),
               json.dumps(inq))

        # --- Metrics: replication bytes raw and on the wire, write round trips, lag.
        req = urllib.request.Request(n1.url + "/metrics",
                                     headers={"Authorization": "Bearer " + n1.token})
        text = urllib.request.urlopen(req, timeout=10).read().decode()
        metric = {}
        for line in text.splitlines():
            for key in ('tandem_replication_sent_bytes{kind="raw"}',
                        'tandem_replication_sent_bytes{kind="wire"}',
                        "tandem_replicated_write_seconds_count"):
                if line.startswith(key + " "):
                    metric[key] = float(line.split()[1])
        raw = metric.get('tandem_replication_sent_bytes{kind="raw"}', 0)
        wire = metric.get('tandem_replication_sent_bytes{kind="wire"}', 0)
        record("r2: metrics show raw >= wire > 0 replication bytes and write round trips",
               raw >= 2 * (44 << 20) and 0 < wire <= raw and
               metric.get("tandem_replicated_write_seconds_count", 0) > 0
               and "tandem_replica_lag_bytes{" in text, json.dumps(metric))

        # --- Growing: refused (501) with replicas, works without.
        p = n1.ctl("volume", "update", "r2", "--size", "128MiB", check=False)
        record("r2: growing a replicated volume is refused, not half done",
               p.returncode != 0 and "not supported" in p.stdout + p.stderr, p.stdout + p.stderr)

        n1.ctl("volume", "create", "g0", "--size", "64MiB", "--node", "n1")
        n1.ctl("volume", "update", "g0", "--size", "96MiB")

        def size_seen(node):
            p = subprocess.run(["qemu-img", "info", "iscsi://%s/%sg0/0" % (node.address, IQN)],
                               capture_output=True, text=True, timeout=60)
            return "96 MiB" in p.stdout
        record("g0: a volume without replicas grows, on its master and through n2",
               wait_for(lambda: size_seen(n1), 10) and wait_for(lambda: size_seen(n2), 10))

        # --- Replica count 0 -> 2 -> 1 while a writer runs.
        n1.ctl("volume", "create", "rc", "--size", "64MiB", "--node", "n1")
        urlc = "iscsi://%s/%src/0" % (n1.address, IQN)
        run("rc: data written before any replica exists",
            ["qemu-io", "-f", "raw", "-c", "write -P 0x21 0 8M", urlc])
        cmds = []
        for i in range(48):
            cmds += ["-c", "write -P 0x%02x %dM 1M" % (0x40 + i, 8 + i)]
        writer = subprocess.Popen(["qemu-io", "-f", "raw"] + cmds + [urlc],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        n1.ctl("volume", "update", "rc", "--label", "tandem/replicas=2")
        synced2 = wait_for(lambda: copies_in_sync(n1, "rc", 3), 60)
        out, _ = writer.communicate(timeout=120)
        record("rc: writer finished while replicas were added", writer.returncode == 0, out)
        record("rc: 0 -> 2 replicas, both in sync", synced2, json.dumps(volume(n1, "rc")))
        before = image_paths(cluster, volume(n1, "rc"))
        n1.ctl("volume", "update", "rc", "--label", "tandem/replicas=1")
        record("rc: 2 -> 1 replica", wait_for(lambda: copies_in_sync(n1, "rc", 2), 30),
               json.dumps(volume(n1, "rc")))
        after = image_paths(cluster, volume(n1, "rc"))
        removed = [p for n, p in before if (n, p) not in after]
        record("rc: the removed replica's image is deleted",
               len(removed) == 1 and wait_for(lambda: not os.path.exists(removed[0]), 15),
               repr(removed))
        checks = ["-c", "read -P 0x21 0 8M"]
        for i in range(48):
            checks += ["-c", "read -P 0x%02x %dM 1M" % (0x40 + i, 8 + i)]
        run("rc: every write reads back", ["qemu-io", "-f", "raw"] + checks + [urlc])
        hashes = {name: sha256(p) for name, p in after}
        record("rc: master and remaining replica identical", len(set(hashes.values())) == 1,
               json.dumps(hashes))
        # --- Master loss: SIGKILL the master while a writer goes through another node. The
        # controller promotes an in-sync replica; the writer's session stays up; every write
        # reads back; the old master returns as a replica and is resynced.
        n1.ctl("volume", "create", "fo", "--size", "64MiB", "--label", "tandem/replicas=2",
               "--node", "n2")
        record("fo: in sync on three nodes", wait_for(lambda: copies_in_sync(n1, "fo", 3), 20),
               json.dumps(volume(n1, "fo")))
        n3 = cluster.node("n3")
        urlf = "iscsi://%s/%sfo/0" % (n3.address, IQN)
        # n3 learns of the volume with its next heartbeat.
        record("fo: n3 presents the volume",
               wait_for(lambda: subprocess.run(["qemu-img", "info", urlf], capture_output=True,
                                               timeout=60).returncode == 0, 10))
        cmds = []
        for i in range(40):  # about 2 s of writes: the master dies in the middle
            cmds += ["-c", "write -P 0x%02x %dM 1M" % (0x80 + i, i), "-c", "sleep 50"]
        writer = subprocess.Popen(["qemu-io", "-f", "raw"] + cmds + [urlf],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: writer.poll() is not None, 0.7)
        n2.kill()
        killed_at = time.time()
        out, _ = writer.communicate(timeout=120)
        stalled = time.time() - killed_at
        record("fo: the writer through n3 finished without an error across the master's death",
               writer.returncode == 0 and "error" not in out.lower()
               and out.count("wrote 1048576/1048576") == 40, out)
        def promoted():
            v = volume(n1, "fo")
            master = [c["node"] for c in v["copies"] if c["role"] == "master"] if v else []
            return v is not None and master and master[0] != "n2" and v.get("generation", 1) >= 2
        record("fo: a replica was promoted (new generation)", wait_for(promoted, 15),
               json.dumps(volume(n1, "fo")))
        print("     fo: writer finished %.1f s after SIGKILL of the master" % stalled)
        checks = []
        for i in range(40):
            checks += ["-c", "read -P 0x%02x %dM 1M" % (0x80 + i, i)]
        run("fo: every acknowledged write reads back from the new master",
            ["qemu-io", "-f", "raw"] + checks + [urlf])
        n2.start()
        record("fo: the old master returns as a replica and is resynced",
               wait_for(lambda: copies_in_sync(n1, "fo", 3), 60), json.dumps(volume(n1, "fo")))
        p = n1.ctl("volume", "verify", "fo", check=False)
        record("fo: volume verify: all copies identical after the failover",
               p.returncode == 0 and "identical" in p.stdout, p.stdout + p.stderr)
        # --- Failure mode hard, 2 s grace: the replica's node dies -> degraded -> read-only
        # (DATA PROTECT) after the grace; back in sync, a session that stayed logged in is
        # still read-only, a new login writes again.
        # Two replicas on three nodes: no spare node to place a new one on.
        n1.ctl("volume", "create", "fm", "--size", "16MiB", "--label", "tandem/replicas=2",
               "--label", "tandem/failure-grace=2", "--node", "n1")
        record("fm: in sync", wait_for(lambda: copies_in_sync(n1, "fm", 3), 20))
        urlm = "iscsi://%s/%sfm/0" % (n1.address, IQN)
        run("fm: writes while healthy", ["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 64k",
                                         urlm])
        rep = "n3"
        # A session that logs in while healthy and writes again only after the replica has
        # gone, the volume turned read-only and the replica came back.
        session = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "write -P 0x12 0 4k", "-c",
                                    "sleep 15000", "-c", "write -P 0x33 0 64k", urlm],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        session_start = time.time()
        time.sleep(0.5)  # lets it log in (not a sync point: checked below)
        cluster.node(rep).kill()
        record("fm: read-only after the grace period",
               wait_for(lambda: (volume(n1, "fm") or {}).get("state") == "read-only", 20),
               json.dumps(volume(n1, "fm")))
        p = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x22 0 64k", urlm],
                           capture_output=True, text=True, timeout=60)
        record("fm: a new session cannot write (the LUN reports write protect)",
               "write protected" in (p.stdout + p.stderr).lower() or
               "failed" in (p.stdout + p.stderr).lower(), p.stdout + p.stderr)
        run("fm: reads still work", ["qemu-io", "-r", "-f", "raw", "-c", "read -P 0x12 0 4k",
                                     urlm])
        cluster.node(rep).start()
        record("fm: the replica is back in sync", wait_for(lambda: copies_in_sync(n1, "fm", 3),
                                                            30), json.dumps(volume(n1, "fm")))
        back_in_sync = time.time()
        out, _ = session.communicate(timeout=60)
        record("fm: the session logged in before stays read-only after the replica is back",
               back_in_sync < session_start + 15 and "wrote 4096/4096" in out and
               "failed" in out.lower(), out)
        run("fm: a new login writes again", ["qemu-io", "-f", "raw", "-c",
                                             "write -P 0x44 0 64k", urlm])
        record("fm: the volume is healthy again",
               wait_for(lambda: (volume(n1, "fm") or {}).get("state") == "healthy", 10),
               json.dumps(volume(n1, "fm")))
        # --- Replica loss with a spare node: a new replica is placed and synced; when the lost
        # one returns, the extra copy with more left to copy is dropped (smallest difference).
        n1.ctl("volume", "create", "rp", "--size", "16MiB", "--label", "tandem/replicas=1",
               "--label", "tandem/failure-mode=soft", "--node", "n1")
        record("rp: in sync", wait_for(lambda: copies_in_sync(n1, "rp", 2), 20))
        run("rp: data written", ["qemu-io", "-f", "raw", "-c", "write -P 0x5e 0 4M", "iscsi://%s/%srp/0" % (n1.address, IQN)])
        lost = [c["node"] for c in volume(n1, "rp")["copies"] if c["role"] == "replica"][0]
        cluster.node(lost).kill()

        def replaced():
            v = volume(n1, "rp") or {}
            live = [c for c in v.get("copies", []) if c["node"] != lost]
            return len(live) == 2 and all(c["state"] == "in-sync" for c in live)
        record("rp: a new replica is placed on the spare node and synced", wait_for(replaced, 30),
               json.dumps(volume(n1, "rp")))
        cluster.node(lost).start()
        record("rp: when the lost replica returns, the copy with more left to copy is dropped",
               wait_for(lambda: copies_in_sync(n1, "rp", 2) and
                        lost not in [c["node"] for c in volume(n1, "rp")["copies"]], 30),
               json.dumps(volume(n1, "rp")))
        p = n1.ctl("volume", "verify", "rp", check=False)
        record("rp: volume verify: identical", p.returncode == 0 and "identical" in p.stdout,
               p.stdout + p.stderr)
    finally:
        cluster.stop()
    return finish(results, work)


if __name__ == "__main__":
    sys.exit(main())
