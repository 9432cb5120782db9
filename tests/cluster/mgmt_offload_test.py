#!/usr/bin/env python3
"""No management call stalls a node's data path: two real tandemd nodes, each with a single
network thread (--net-threads 1), so anything that blocked it would stop iSCSI too. The
replica's node is frozen (SIGSTOP) and a `volume verify` is asked of the controller, whose
verify then waits on a call to the frozen node; five of them fill the controller's slow pool.
While they wait, iSCSI I/O on the controller must go on completing, /healthz must answer
promptly (a network-thread route) and a catalogue route too (the control pool, apart from the
slow pool the verifies wait on). After SIGCONT every verify must finish, copies identical.
Then five verifies asked of n2 at once (passed on to the controller, which asks n2 for its
checksums) must all finish: the two legs run on different pools of n2. Prints "N passed, N failed".

usage: mgmt_offload_test.py --tandemd PATH --tandemctl PATH --bench PATH
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tandem_node import finish, recorder  # noqa: E402
from tandem_cluster import IQN, Cluster, copies_in_sync, volume, wait_for  # noqa: E402

# Generous bounds for a loaded 2-core machine; a blocked network thread would hold every one
# of them up for the whole 30 s of the verify's call to the frozen node.
HEALTH_S = 3.0
CATALOGUE_S = 5.0
IO_S = 15.0


def timed_get(url, token=None, timeout=25):
    """(seconds, status) of one GET; status None when it failed or timed out."""
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    start = time.time()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return time.time() - start, r.status
    except Exception:  # noqa: BLE001 (timeouts, resets: the caller reports them)
        return time.time() - start, None


def accept_backlog(address, port=8080):
    """Connections waiting in the listen queue of address:port (a frozen node accepts none)."""
    p = subprocess.run(["ss", "-Hltn", "src", "%s:%d" % (address, port)], capture_output=True,
                       text=True)
    for line in p.stdout.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] == "LISTEN":
            return int(f[1])
    return 0


def outputs(proc, timeout):
    """(stdout, stderr) of `proc`, killed after `timeout` seconds."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def start_verifies(tandemctl, url, token, name, count):
    """`count` concurrent `volume verify name` calls to the node at `url`, as processes."""
    return [subprocess.Popen([tandemctl, "--server", url, "--token", token, "--json", "volume",
                              "verify", name],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(count)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandemd", required=True)
    ap.add_argument("--tandemctl", required=True)
    ap.add_argument("--bench", required=True)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tandem-offload-")
    # A long node timeout: the frozen node stays "online", so nothing but the verify changes.
    one_thread = ("--net-threads", "1", "--heartbeat-ms", "200")
    cluster = Cluster(args, work, second_octet=254, count=2,
                      controller_args=one_thread + ("--node-timeout-ms", "120000"),
                      node_args=one_thread)
    results = []
    record = recorder(results)

    if not cluster.start_or_report():
        return 1
    n1, n2 = cluster.n1, cluster.node("n2")
    verifies = []
    frozen = False
    frozen_n1 = False
    try:
        n1.ctl("volume", "create", "io", "--size", "64MiB", "--block-size", "4096", "--node", "n1")
        n1.ctl("volume", "create", "rv", "--size", "64MiB", "--block-size", "4096", "--node", "n1",
               "--label", "tandem/replicas=1", "--failure-mode", "alwayson")
        record("rv: master on n1 and a replica on n2, in sync",
               wait_for(lambda: copies_in_sync(n1, "rv", 2), 20), json.dumps(volume(n1, "rv")))
        # The catalogue may say in sync before n2 has opened its copy (it learns of it from
        # its next heartbeat): wait until a verify compares both copies.
        def verified():
            p = n1.ctl("--json", "volume", "verify", "rv", check=False)
            try:
                return p.returncode == 0 and json.loads(p.stdout).get("identical") is True
            except ValueError:
                return False
        record("rv: verify finds both copies identical before the freeze",
               wait_for(verified, 20))
        bench = [args.bench, "--url", "iscsi://%s/%sio/0" % (n1.address, IQN), "--bs", "4k",
                 "--rw", "mix", "--qd", "4", "--ops", "5000", "--range", "16m", "--verify",
                 "--timeout", "20"]
        p = subprocess.run(bench, capture_output=True, text=True, timeout=60)
        record("io: 5000 verified 4 KiB ops before the freeze", p.returncode == 0,
               p.stdout + p.stderr)

        os.kill(n2.proc.pid, signal.SIGSTOP)
        frozen = True
        # More verifies than the slow pool has threads (4): each reads n1's copy, then calls
        # n2, which cannot accept, so its connection waits in n2's listen queue and n1's
        # thread with it; the fifth waits for a thread.
        verifies = start_verifies(args.tandemctl, n1.url, n1.token, "rv", 5)
        record("verify: n1's four slow threads are all waiting on the frozen n2",
               wait_for(lambda: accept_backlog(n2.address) >= 4, 20),
               "n2 accept backlog %d" % accept_backlog(n2.address))

        start = time.time()
        p = subprocess.run(bench, capture_output=True, text=True, timeout=60)
        io_s = time.time() - start
        out = {}
        try:
            out = json.loads(p.stdout)
        except ValueError:
            pass
        record("io: 5000 verified 4 KiB ops on n1 complete within %.0f s while the verify "
               "waits (took %.2f s)" % (IO_S, io_s), p.returncode == 0 and io_s < IO_S,
               p.stdout + p.stderr)
        print("     %s" % json.dumps({k: out.get(k) for k in ("ops", "iops", "errors")
                                       if k in out}))
        health = []
        for _ in range(5):
            health.append(timed_get(n1.url + "/healthz", timeout=10))
            if health[-1][1] != 200:
                break
        record("/healthz answers 200 within %.0f s, 5 times, while the verify waits (%s)" %
               (HEALTH_S, ", ".join("%.3f" % s for s, _ in health)),
               all(st == 200 and s < HEALTH_S for s, st in health), repr(health))
        listing = timed_get(n1.url + "/api/v1/volumes", n1.token, timeout=10)
        record("GET /api/v1/volumes (catalogue, control pool) answers within %.0f s (%.3f s)" %
               (CATALOGUE_S, listing[0]), listing[1] == 200 and listing[0] < CATALOGUE_S,
               repr(listing))
        record("verify: all five still waiting after all of that (the I/O overlapped them)",
               all(v.poll() is None for v in verifies) and accept_backlog(n2.address) >= 4)

        os.kill(n2.proc.pid, signal.SIGCONT)
        frozen = False
        answers = []
        for v in verifies:
            vout, verr = outputs(v, 40)
            try:
                rep = json.loads(vout)
            except ValueError:
                rep = {}
            answers.append((v.returncode, rep.get("identical"), rep.get("compared"),
                            (vout + verr)[-300:]))
        record("verify: all five answered once n2 runs again, both copies identical",
               all(a[:3] == (0, True, 2) for a in answers), repr(answers))
        h = timed_get(n2.url + "/healthz")
        record("n2 answers again after SIGCONT", h[1] == 200, repr(h))

        # Through n2, which passes verifies on to the controller, whose verify asks n2 for its
        # checksums. The controller is frozen until n2's forwarding threads all wait on it, so
        # the verifies reach it together and call back into n2 while those threads are busy.
        os.kill(n1.proc.pid, signal.SIGSTOP)
        frozen_n1 = True
        start = time.time()
        through_n2 = start_verifies(args.tandemctl, n2.url, n1.token, "rv", 5)
        record("verify through n2: four calls wait on the frozen controller",
               wait_for(lambda: accept_backlog(n1.address) >= 4, 20),
               "n1 accept backlog %d" % accept_backlog(n1.address))
        os.kill(n1.proc.pid, signal.SIGCONT)
        frozen_n1 = False
        outs = [outputs(p, 40) for p in through_n2]
        took = time.time() - start
        record("five verifies at once through n2 all find the copies identical within 20 s "
               "(took %.2f s)" % took,
               took < 20 and all(p.returncode == 0 and '"identical": true' in o[0]
                                 for p, o in zip(through_n2, outs)), repr(outs)[-2000:])
    finally:
        if frozen:
            os.kill(n2.proc.pid, signal.SIGCONT)
        if frozen_n1:
            os.kill(n1.proc.pid, signal.SIGCONT)
        for v in verifies:
            if v.poll() is None:
                v.kill()
                v.wait()
        cluster.stop()
    return finish(results, work)


if __name__ == "__main__":
    sys.exit(main())
