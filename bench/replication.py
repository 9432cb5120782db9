"""bench/replication.py: the replication figures of bench/compare (imported by it).

Starts a Tandem cluster of NODES tandemd processes on loopback addresses of this machine
(n1 the controller, every volume's master on n1) and measures three things:

  cost    the same write workloads against volumes with 0, 1 and 2 replicas, alternated
          round by round; ratios 1r/0r and 2r/0r are medians of per-round ratios;
  lz4     1 replica, compression on vs off, data random vs compressible:2: IOPS and the
          master's replication bytes on the wire vs raw (deltas of /metrics around each run);
  resync  a 1-replica volume: stop the replica's node, write 1%/10%/100% of the volume
          (1 MiB sequential writes), and 1% as scattered 4 KiB random writes; start the node
          again, time until the copy is in-sync, the master's raw and wire bytes sent
          meanwhile and the replica's (its per-4 KiB hashes), divided by the bytes changed.

Peak RSS (VmHWM, reset before each run) of the master's and the replicas' tandemd is kept
per run. Python 3 standard library only; see bench/README.md.
"""

import json
import os
import re
import signal
import statistics
import sys
import subprocess
import time
import urllib.request

NODES = 3
MIB = 1 << 20

# Workloads of the cost and lz4 sections: (name, tandem-bench arguments).
COST_WORKLOADS = [
    ("randwrite-4k-qd1", ["--rw", "randwrite", "--bs", "4k", "--qd", "1"]),
    ("randwrite-4k-qd32", ["--rw", "randwrite", "--bs", "4k", "--qd", "32"]),
    ("write-1m-qd8", ["--rw", "write", "--bs", "1m", "--qd", "8"]),
]
LZ4_WORKLOADS = [
    ("randwrite-4k-qd32", ["--rw", "randwrite", "--bs", "4k", "--qd", "32"]),
    ("write-1m-qd8", ["--rw", "write", "--bs", "1m", "--qd", "8"]),
]
# name -> (replicas, compression label); the cost section runs with compression off so it
# measures replication alone.
COST_VOLUMES = [("r0", 0), ("r1", 1), ("r2", 2)]
LZ4_VARIANTS = [  # (variant name, volume, pattern)
    ("lz4-off/random", "coff", "random"),
    ("lz4-on/random", "con", "random"),
    ("lz4-off/compressible:2", "coff", "compressible:2"),
    ("lz4-on/compressible:2", "con", "compressible:2"),
]
# (percent changed, how): "seq" 1 MiB sequential writes, "4k" scattered 4 KiB random writes.
# The copy starts empty: the first 100% finds most regions never written there (only their
# non-zero blocks go, no hashes); the second rewrites a volume the copy holds entirely, so
# every region is compared by hash (the slowest resync there is).
RESYNC_CASES = [(1, "seq"), (1, "4k"), (10, "seq"), (100, "seq"), (100, "seq")]
# What run() measures (compare --repl-sections): the first three on one 3-node cluster,
# failover and memory (bench/failover.py) each on a cluster of their own.
SECTIONS = ("cost", "lz4", "resync", "failover", "memory")
# --node-timeout-ms of the cost/lz4/resync cluster. A resync case keeps the replica's node
# down for as long as its writes take; past the node timeout the controller declares the node
# offline, places a replacement copy on the third node and, once the old node is back, drops
# the copy with more left to copy: usually the returning one, which then never resyncs (the
# bench once reported a 100% resync of 0 bytes in 0.23 s that way). The master still sees the
# copy leave at once (its link closes), and the other sections do not depend on it.
RESYNC_NODE_TIMEOUT_MS = 600000


class ClusterError(Exception):
    pass


def _log(msg):
    print(f"[compare] {msg}", flush=True, file=sys.stderr)


class Node:
    def __init__(self, name, addr, datadir, logpath):
        self.name, self.addr, self.datadir, self.logpath = name, addr, datadir, logpath
        self.proc = None
        self.cmd = None

    @property
    def api(self):
        return f"http://{self.addr}:8080"

    def pid(self):
        return self.proc.pid if self.proc and self.proc.poll() is None else None


class Cluster:
    """NODES tandemd processes; start() brings them up, stop() stops every one it started
    (SIGTERM, then SIGKILL after 20 s)."""

    def __init__(self, workdir, addrs, bin_dir, heartbeat_ms=200, node_timeout_ms=None,
                 prefix="cluster"):
        """heartbeat_ms / node_timeout_ms None: tandemd's defaults. prefix names the data
        directories and logs in workdir, so several clusters can run one after another."""
        self.workdir, self.bin_dir = workdir, bin_dir
        self.tandemd = os.path.join(bin_dir, "tandemd")
        self.tandemctl = os.path.join(bin_dir, "tandemctl")
        self.heartbeat_ms, self.node_timeout_ms = heartbeat_ms, node_timeout_ms
        self.nodes = [Node(f"n{i + 1}", a, os.path.join(workdir, f"{prefix}-n{i + 1}"),
                           os.path.join(workdir, f"{prefix}-n{i + 1}.log"))
                      for i, a in enumerate(addrs)]

    @property
    def master(self):
        return self.nodes[0]

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def token(self):
        with open(os.path.join(self.master.datadir, "admin.token")) as f:
            return f.read().strip()

    def start(self):
        for b in (self.tandemd, self.tandemctl):
            if not os.access(b, os.X_OK):
                raise ClusterError(f"{b} not built")
        for i, n in enumerate(self.nodes):
            os.makedirs(n.datadir, exist_ok=True)
            n.cmd = [self.tandemd, "--node-name", n.name, "--bind", n.addr, "--data-dir",
                     n.datadir]
            if self.heartbeat_ms is not None:
                n.cmd += ["--heartbeat-ms", str(self.heartbeat_ms)]
            if self.node_timeout_ms is not None:
                n.cmd += ["--node-timeout-ms", str(self.node_timeout_ms)]
            if i > 0:
                with open(os.path.join(self.master.datadir, "join.token")) as f:
                    n.cmd += ["--join", self.master.api, "--join-token", f.read().strip()]
            self.start_node(n)
        self.wait_nodes_up()

    def start_node(self, n, timeout=30):
        offset = os.path.getsize(n.logpath) if os.path.exists(n.logpath) else 0
        logf = open(n.logpath, "ab")
        n.proc = subprocess.Popen(n.cmd, stdout=logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        deadline = time.time() + timeout
        while True:
            if n.proc.poll() is not None:
                raise ClusterError(f"{n.name} exited {n.proc.returncode}: {self._tail(n)}")
            with open(n.logpath, errors="replace") as f:
                f.seek(offset)
                if " ready: " in f.read():
                    break
            if time.time() > deadline:
                raise ClusterError(f"{n.name} not ready after {timeout} s: {self._tail(n)}")
            time.sleep(0.1)
        _log(f"cluster: {n.name} pid {n.proc.pid} on {n.addr}")

    def wait_nodes_up(self, timeout=30):
        """Until the controller lists every node as online (best effort: the field names
        are read loosely, and a missing listing is not an error)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = self.ctl(["--json", "node", "list"], check=False)
            try:
                text = json.dumps(json.loads(p.stdout)).lower()
            except (json.JSONDecodeError, ValueError):
                return
            if all(n.name in text for n in self.nodes) and "offline" not in text:
                return
            time.sleep(0.3)

    def stop_node(self, n, sig=signal.SIGTERM):
        if n.proc is None or n.proc.poll() is not None:
            return
        n.proc.send_signal(sig)
        try:
            n.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            _log(f"cluster: {n.name} pid {n.proc.pid} ignored SIGTERM for 20 s: SIGKILL")
            n.proc.kill()
            n.proc.wait(timeout=10)

    def stop(self):
        for n in reversed(self.nodes):
            try:
                self.stop_node(n)
            except Exception as e:  # keep stopping the others
                _log(f"cluster: stopping {n.name} failed: {e}")
            n.proc = None

    def _tail(self, n, lines=10):
        try:
            with open(n.logpath, errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""

    # ----------------------------------------------------------------- API helpers

    def ctl(self, args, check=True, timeout=60):
        # The global --json flag must precede the subcommand.
        glob = [a for a in args if a == "--json"]
        rest = [a for a in args if a != "--json"]
        cmd = ([self.tandemctl] + glob + ["--server", self.master.api, "--token-file",
                                          os.path.join(self.master.datadir, "admin.token")]
               + rest)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise ClusterError(f"tandemctl {' '.join(rest)}: exit {p.returncode}: "
                               f"{(p.stderr or p.stdout).strip()}")
        return p

    def create_volume(self, name, size, replicas, compression, extra_labels=(), master=None):
        args = ["volume", "create", name, "--size", str(size), "--block-size", "4096",
                "--label", f"tandem/replicas={replicas}",
                "--label", f"tandem/compression={'on' if compression else 'off'}",
                "--node", master or self.master.name]
        for label in extra_labels:
            args += ["--label", label]
        self.ctl(args)

    def volume(self, name):
        p = self.ctl(["--json", "volume", "get", name])
        v = json.loads(p.stdout)
        return v.get("volume", v) if isinstance(v, dict) else v

    def copies(self, name):
        return self.volume(name).get("copies", [])

    def replica_copies(self, name):
        return [c for c in self.copies(name) if c.get("role") != "master"]

    def wait_in_sync(self, name, replicas, timeout, poll=0.1):
        """Seconds until `replicas` replica copies are in-sync; raises after timeout."""
        t0 = time.monotonic()
        last = None
        while True:
            reps = self.replica_copies(name)
            last = reps
            if len(reps) >= replicas and all(c.get("state") == "in-sync" for c in reps):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise ClusterError(f"{name}: copies not in-sync after {timeout} s: {last}")
            time.sleep(poll)

    def url(self, volume):
        return f"iscsi://{self.master.addr}:3260/iqn.2026-11.dev.tandem:{volume}/0"

    def metrics(self, node=None):
        """The replication counters of a node (default: the master) from /metrics."""
        node = node or self.master
        req = urllib.request.Request(node.api + "/metrics",
                                     headers={"Authorization": f"Bearer {self.token()}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read().decode(errors="replace")
        out = {"raw": 0.0, "wire": 0.0}
        for line in text.splitlines():
            m = re.match(r'tandem_replication_sent_bytes\{[^}]*kind="(raw|wire)"[^}]*\}\s+(\S+)',
                         line)
            if m:
                out[m.group(1)] += float(m.group(2))
        return out


def proc_rss_reset(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def proc_cpu_seconds(pids):
    """User + system CPU seconds so far of the processes `pids` (those still running)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class _Url:
    """The shape Runner.bench wants: url and server_pid()."""

    def __init__(self, url, pid):
        self.url, self._pid = url, pid

    def server_pid(self):
        return self._pid


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class ReplicationBench:
    def __init__(self, args, runner, cluster, summarize, errors):
        self.args, self.runner, self.cluster = args, runner, cluster
        self.summarize, self.errors = summarize, errors

    def run_one(self, volume, bench_args, label):
        """One tandem-bench run against `volume`; RSS of every node and the master's
        replication byte deltas are added to the summary."""
        c = self.cluster
        for n in c.nodes[1:]:
            if n.pid():
                proc_rss_reset(n.pid())
        before = c.metrics()
        pids = [n.pid() for n in c.nodes if n.pid()]
        cpu_before = proc_cpu_seconds(pids)
        report, err, rss = self.runner.bench(_Url(c.url(volume), c.master.pid()), bench_args,
                                             self.args.seconds + self.args.warmup + 120)
        cpu = proc_cpu_seconds(pids) - cpu_before
        after = c.metrics()
        entry = {"ok": err is None}
        if report is not None and "lat_us" in report:
            entry.update(self.summarize(report, rss))
            # Every node's CPU per write (the warm-up's writes are not counted in ops, so this
            # is exact with --warmup 0 and an overstatement by (warmup+seconds)/seconds else).
            if entry.get("ops"):
                entry["cpu_us_per_op"] = round(cpu * 1e6 / entry["ops"], 1)
                # And the initiator's (tandem-bench, same warm-up caveat), from /usr/bin/time:
                # nodes and initiator share the machine's cores, so their sum bounds the IOPS.
                if rss.get("bench_cpu_s") is not None:
                    entry["initiator_cpu_us_per_op"] = round(
                        rss["bench_cpu_s"] * 1e6 / entry["ops"], 1)
                    entry["all_cpu_us_per_op"] = round(
                        entry["cpu_us_per_op"] + entry["initiator_cpu_us_per_op"], 1)
        entry["master_rss_kib"] = rss.get("server_kib")
        entry["replica_rss_kib"] = max([proc_peak_rss_kib(n.pid()) or 0
                                        for n in c.nodes[1:] if n.pid()] or [0]) or None
        entry["sent_raw_bytes"] = int(after["raw"] - before["raw"])
        entry["sent_wire_bytes"] = int(after["wire"] - before["wire"])
        if err:
            entry["error"] = err
            self.errors.append(f"{label}: {err}")
            _log(f"{label}: FAILED {err}")
        else:
            _log(f"{label}: {entry['iops']:>9,.0f} IOPS {entry['mb_per_s']:>7.1f} MB/s p50 "
                 f"{entry['p50_us']:.0f} p99 {entry['p99_us']:.0f} us, "
                 f"cpu {entry.get('cpu_us_per_op') or 0:.0f} us/op, repl raw "
                 f"{entry['sent_raw_bytes'] / MIB:.1f} MiB wire "
                 f"{entry['sent_wire_bytes'] / MIB:.1f} MiB")
        return entry

    def prefill(self, volume, size):
        """Writes the whole volume once (1 MiB, QD 8), as compare does for its LUNs. Besides
        reads hitting data, this puts every copy's file in the page cache before measuring:
        on a VM whose free memory goes back to the host (virtio-balloon free page reporting),
        the first write to a page costs a host fault, about 0.7 ms per MiB here, and a
        time-bound run of a slower volume would spend more of its run paying it."""
        report, err, _ = self.runner.bench(
            _Url(self.cluster.url(volume), self.cluster.master.pid()),
            ["--rw", "write", "--bs", "1m", "--qd", "8", "--ops", str(size // MIB),
             "--pattern", "random"], 600)
        if err:
            raise ClusterError(f"prefill of {volume} failed: {err}")
        _log(f"{volume}: prefilled {size // MIB} MiB at {report['mb_per_s']:.0f} MB/s")

    def timed_args(self, wargs, pattern):
        return wargs + ["--seconds", str(self.args.seconds), "--warmup", str(self.args.warmup),
                        "--pattern", pattern, "--seed", str(self.args.seed)]

    def cost(self):
        out = []
        for wname, wargs in COST_WORKLOADS:
            runs = {v: [] for v, _ in COST_VOLUMES}
            for rnd in range(1, self.args.rounds + 1):
                for vol, _ in COST_VOLUMES:
                    e = self.run_one(vol, self.timed_args(wargs, "random"),
                                     f"{wname:18} {vol} round {rnd}")
                    e["round"] = rnd
                    runs[vol].append(e)
            med = {v: {k: median([r.get(k) for r in runs[v] if r["ok"]])
                       for k in ("iops", "mb_per_s", "p50_us", "p99_us", "p99_9_us",
                                 "master_rss_kib", "replica_rss_kib", "sent_raw_bytes",
                                 "cpu_us_per_op", "initiator_cpu_us_per_op",
                                 "all_cpu_us_per_op")}
                   for v in runs}
            rat = []
            for num in ("r1", "r2"):
                x = _ratios(runs, num, "r0")
                if not x:
                    continue
                # The IOPS ratio if both ran the machine's CPUs full at their CPU cost per write
                # (nodes + initiator): what replication's CPU alone allows.
                a, b = med[num].get("all_cpu_us_per_op"), med["r0"].get("all_cpu_us_per_op")
                x["cpu_bound_iops"] = round(b / a, 3) if a and b else None
                rat.append(x)
            out.append({"name": wname, "args": wargs, "runs": runs, "median": med,
                        "ratios": rat})
        return out

    def lz4(self):
        out = []
        for wname, wargs in LZ4_WORKLOADS:
            runs = {v: [] for v, _, _ in LZ4_VARIANTS}
            for rnd in range(1, self.args.rounds + 1):
                for variant, vol, pattern in LZ4_VARIANTS:
                    e = self.run_one(vol, self.timed_args(wargs, pattern),
                                     f"{wname:18} {variant} round {rnd}")
                    e["round"] = rnd
                    if e.get("sent_raw_bytes"):
                        e["wire_over_raw"] = round(e["sent_wire_bytes"] / e["sent_raw_bytes"], 4)
                    runs[variant].append(e)
            med = {v: {k: median([r.get(k) for r in runs[v] if r["ok"]])
                       for k in ("iops", "mb_per_s", "p50_us", "p99_us", "wire_over_raw",
                                 "sent_raw_bytes", "sent_wire_bytes", "master_rss_kib")}
                   for v in runs}
            rat = []
            for data in ("random", "compressible:2"):
                x = _ratios(runs, f"lz4-on/{data}", f"lz4-off/{data}")
                if x:
                    x["pair"] = f"on / off, {data}"
                    rat.append(x)
            out.append({"name": wname, "args": wargs, "runs": runs, "median": med,
                        "ratios": rat})
        return out

    def resync(self, volume, size, out, cases=RESYNC_CASES):
        """Appends one entry per share to `out` as it goes (a later failure keeps them).
        Every entry must prove itself: the writer wrote every op while the copy was down, the
        copy that returned is the one that left (not a replacement the controller placed
        meanwhile), and `volume verify` then finds the master and the copy identical; any of
        these failing is an error of the entry (and of the results)."""
        c = self.cluster
        for case, (pct, how) in enumerate(cases):
            mib = max(1, size * pct // 100 // MIB)
            c.wait_in_sync(volume, 1, timeout=120)
            reps = c.replica_copies(volume)
            if len(reps) != 1:
                raise ClusterError(f"{volume}: expected one replica copy, got {reps}")
            copy = reps[0].get("number")
            node = c.node(reps[0]["node"])
            entry = {"percent": pct, "writes": how, "changed_bytes": mib * MIB,
                     "replica_node": node.name, "replica_copy": copy}
            problems = []
            t_down = time.monotonic()
            c.stop_node(node, signal.SIGTERM)
            # Until the master has noticed (out-of-sync), writes would still be "in-sync".
            t0 = time.monotonic()
            left = False
            while time.monotonic() - t0 < 30:
                states = [x.get("state") for x in c.replica_copies(volume)]
                if states and all(s != "in-sync" for s in states):
                    left = True
                    break
                time.sleep(0.1)
            if not left:
                problems.append("the copy was still in-sync 30 s after its node stopped")
            if how == "4k":
                # Random LBAs over the whole volume: a few may repeat, so the bytes changed
                # can be a little below those written (the ratio errs high, never low).
                ops = mib * 256
                wargs = ["--rw", "randwrite", "--bs", "4k", "--qd", "32", "--ops",
                         str(ops), "--pattern", "random", "--seed",
                         str(self.args.seed + 100 + case)]
            else:
                ops = mib
                wargs = ["--rw", "write", "--bs", "1m", "--qd", "8", "--ops", str(ops),
                         "--range", f"{mib}MiB", "--pattern", "random", "--seed",
                         str(self.args.seed + 100 + case)]
            t_write = time.monotonic()
            report, err, _ = self.runner.bench(_Url(c.url(volume), c.master.pid()),
                                               wargs + ["--warmup", "0"], 600)
            entry["write_seconds"] = round(time.monotonic() - t_write, 2)
            entry["writer_ops"] = (report or {}).get("ops")
            if err:
                entry["writer_error"] = err
                problems.append(f"write while down: {err}")
            elif entry["writer_ops"] != ops:
                problems.append(f"the writer completed {entry['writer_ops']} of {ops} writes")
            before = c.metrics()
            proc_rss_reset(c.master.pid())
            t_start = time.monotonic()
            entry["down_seconds"] = round(t_start - t_down, 2)
            c.start_node(node)
            entry["node_start_seconds"] = round(time.monotonic() - t_start, 2)
            try:
                c.wait_in_sync(volume, 1, timeout=600)
                entry["seconds"] = round(time.monotonic() - t_start, 2)
            except ClusterError as e:
                problems.append(str(e))
            after = c.metrics()
            entry["sent_raw_bytes"] = int(after["raw"] - before["raw"])
            entry["sent_wire_bytes"] = int(after["wire"] - before["wire"])
            entry["raw_over_changed"] = round(entry["sent_raw_bytes"] / entry["changed_bytes"], 3)
            entry["wire_over_changed"] = round(entry["sent_wire_bytes"] / entry["changed_bytes"],
                                               3)
            try:  # the restarted replica's own sends: its hashes, summaries and ACKs
                entry["replica_sent_raw_bytes"] = int(c.metrics(node)["raw"])
            except (OSError, ValueError):
                entry["replica_sent_raw_bytes"] = None
            entry["master_rss_kib"] = proc_peak_rss_kib(c.master.pid())
            entry["replica_rss_kib"] = proc_peak_rss_kib(node.pid()) if node.pid() else None
            problems += self.check_resync(volume, copy, node, entry)
            if problems:
                entry["error"] = "; ".join(problems)
                self.errors.append(f"resync {pct}% {how}: {entry['error']}")
            _log(f"resync {pct:>3}% {how} ({mib} MiB changed): {entry.get('seconds', '—')} s, "
                 f"raw {entry['sent_raw_bytes'] / MIB:.1f} MiB "
                 f"(x{entry['raw_over_changed']} of changed), replica sent "
                 f"{(entry['replica_sent_raw_bytes'] or 0) / MIB:.2f} MiB, verify "
                 f"{'identical' if entry.get('verify_identical') else 'NOT identical'}"
                 + (f": ERROR {entry['error']}" if problems else ""))
            out.append(entry)

    def check_resync(self, volume, copy, node, entry):
        """What must hold after a resync case (returns the problems found): the copy in sync
        is the one whose node was stopped, it got at least half the bytes changed (the
        writes are random data, so every unit the writer touched differs), and `volume
        verify` compares the master and it and finds them identical."""
        c = self.cluster
        problems = []
        reps = c.replica_copies(volume)
        entry["copies_after"] = [{k: r.get(k) for k in ("number", "node", "state")}
                                 for r in reps]
        if [(r.get("number"), r.get("node")) for r in reps] != [(copy, node.name)]:
            problems.append(f"copy {copy} on {node.name} is not the volume's one replica "
                            f"afterwards (replaced while its node was down?): "
                            f"{entry['copies_after']}")
        if entry["sent_raw_bytes"] < entry["changed_bytes"] // 2:
            problems.append(f"resync sent {entry['sent_raw_bytes']} bytes for "
                            f"{entry['changed_bytes']} changed")
        p = c.ctl(["--json", "volume", "verify", volume], check=False, timeout=300)
        try:
            v = json.loads(p.stdout)
        except (json.JSONDecodeError, ValueError):
            v = {}
        entry["verify_identical"] = bool(v.get("identical"))
        entry["verify_compared"] = v.get("compared")
        entry["verify_differing_regions"] = v.get("differing_count")
        if p.returncode != 0 or not v.get("identical"):
            problems.append(f"volume verify: exit {p.returncode}, "
                            f"{v.get('differing_count')} region(s) differ "
                            f"{(p.stderr or p.stdout).strip()[:300]}")
        elif v.get("compared") != 2:
            problems.append(f"volume verify compared {v.get('compared')} copies, not 2")
        return problems


def _ratios(runs, num, den):
    a = {r["round"]: r for r in runs.get(num, []) if r.get("ok")}
    b = {r["round"]: r for r in runs.get(den, []) if r.get("ok")}
    rounds = sorted(set(a) & set(b))
    if not rounds:
        return None
    out = {"pair": f"{num} / {den}", "rounds": len(rounds)}
    for key in ("iops", "p50_us", "p99_us", "p99_9_us"):
        per = [a[r][key] / b[r][key] for r in rounds if b[r].get(key)]
        out[key] = round(statistics.median(per), 3) if per else None
        out[key + "_per_round"] = [round(x, 3) for x in per]
    return out


def run(args, runner, summarize, addrs, smoke=False):
    """The whole replication section; returns a JSON-able dict (never raises on a cluster
    failure: the reason goes into it). Smoke: 2 nodes, one 1-replica volume, one short
    workload, so the cluster path is exercised in ctest."""
    errors = []
    result = {"available": False, "reason": None, "nodes": 2 if smoke else len(addrs),
              "addresses": addrs,
              "volume_bytes": args.repl_size, "errors": errors}
    sections = set(getattr(args, "repl_sections", SECTIONS))
    cluster = Cluster(args.workdir, addrs[:2] if smoke else addrs, args.tandem_bin,
                      node_timeout_ms=None if smoke else RESYNC_NODE_TIMEOUT_MS)
    size = args.repl_size
    t_begin = time.monotonic()
    try:
        if smoke and sections & {"cost", "resync"}:
            cluster.start()
            rb = ReplicationBench(args, runner, cluster, summarize, errors)
            if "cost" in sections:
                cluster.create_volume("r1", size, 1, False)
                cluster.wait_in_sync("r1", 1, timeout=60)
                e = rb.run_one("r1", ["--rw", "randwrite", "--bs", "4k", "--qd", "8",
                                      "--seconds", str(args.seconds), "--pattern", "random"],
                               "smoke r1")
                result["smoke"] = e
                result["available"] = True
            if "resync" in sections:  # one case, so its checks (volume verify) cannot rot
                cluster.create_volume("rs", size, 1, False, ["tandem/failure-mode=alwayson"])
                result["resync"] = []
                rb.resync("rs", size, result["resync"], cases=[(1, "seq")])
                result["available"] = True
        elif sections & {"cost", "lz4", "resync"}:
            cluster.start()
            _full(args, runner, summarize, cluster, size, sections, result, errors)
    except (ClusterError, subprocess.SubprocessError, OSError, ValueError, KeyError,
            StopIteration) as e:
        result["reason"] = f"{type(e).__name__}: {e}"
        errors.append(f"cluster: {result['reason']}")
        _log(f"replication: {e}")
    finally:
        cluster.stop()
    # Failover and memory each start their own cluster (default timings; one node).
    import failover  # noqa: E402  (failover.py imports this module)

    def factory(prefix, n):
        return lambda hb, nt: Cluster(args.workdir, addrs[:n], args.tandem_bin, hb, nt, prefix)
    if "failover" in sections:
        result["failover"] = failover.failover(args, factory("failover", 3), smoke)
        errors.extend(result["failover"]["errors"])
    if "memory" in sections:
        result["memory"] = failover.memory(args, factory("memory", 1), smoke)
        errors.extend(result["memory"]["errors"])
    result["available"] = result["available"] or any(
        (result.get(k) or {}).get("available") for k in ("failover", "memory"))
    result["seconds_total"] = round(time.monotonic() - t_begin, 1)
    return result


def _full(args, runner, summarize, cluster, size, sections, result, errors):
    """Cost, lz4 and resync on the 3-node cluster (already started)."""
    rb = ReplicationBench(args, runner, cluster, summarize, errors)
    for vol, reps in COST_VOLUMES:
        cluster.create_volume(vol, size, reps, False)
    cluster.create_volume("coff", size, 1, False)
    cluster.create_volume("con", size, 1, True)
    cluster.create_volume("rs", size, 1, False, ["tandem/failure-mode=alwayson"])
    for vol, reps in COST_VOLUMES + [("coff", 1), ("con", 1), ("rs", 1)]:
        cluster.wait_in_sync(vol, reps, timeout=120)
    result["volumes"] = {v: cluster.copies(v) for v, _ in COST_VOLUMES}
    for vol in [v for v, _ in COST_VOLUMES] * ("cost" in sections) + ["coff", "con"] * (
            "lz4" in sections):
        rb.prefill(vol, size)
    result["available"] = True
    if "cost" in sections:
        result["cost"] = rb.cost()
    if "lz4" in sections:
        result["lz4"] = rb.lz4()
    if "resync" in sections:
        result["resync"] = []
        rb.resync("rs", size, result["resync"])


# ----------------------------------------------------------------------------- markdown


def _verdict(e):
    """A resync row's proof: `volume verify` found both copies identical and nothing else
    went wrong (the entry's error says what did)."""
    if "verify_identical" not in e:
        return "—"  # results from before the bench verified
    if e.get("error"):
        return "ERROR (see Errors)"
    return "yes" if e["verify_identical"] else "NO"


def _fmt(v, digits=0):
    return "—" if v is None else f"{v:,.{digits}f}"


def markdown(r, cores, date):
    import failover  # noqa: E402
    lines = _markdown_cluster(r, cores, date)
    return lines + failover.markdown(r.get("failover"), r.get("memory"))


def _markdown_cluster(r, cores, date):
    lines = ["", f"## Replication — {date}, {cores} cores", ""]
    if not any(k in r for k in ("smoke", "cost", "lz4", "resync")):
        return lines
    if not r.get("available"):
        lines.append(f"Not measured: {r.get('reason')}")
        return lines
    if "smoke" in r:
        e = r["smoke"]
        lines.append(f"Smoke: {r['nodes']}-node cluster, 1 replica, 4 KiB random write QD 8: "
                     f"{_fmt(e.get('iops'))} IOPS, replication raw "
                     f"{_fmt(e.get('sent_raw_bytes'))} bytes — not a measurement.")
        return lines
    size = f"{r['volume_bytes'] >> 20} MiB"
    lines += [f"{r['nodes']} tandemd nodes on loopback, every master on n1, replicas on the "
              f"others; {size} volumes, 4 KiB blocks, compression off unless stated; "
              "latency in µs; RSS = peak resident set of tandemd in MiB.", "",
              "### Cost of replication (medians)", "",
              "| workload | replicas | IOPS | MB/s | p50 | p99 | CPU µs/write: nodes · initiator "
              "| master RSS | replica RSS |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    kib = lambda v: None if v is None else v / 1024
    for w in r.get("cost") or []:
        for v, m in w["median"].items():
            lines.append(f"| {w['name']} | {v[1]} | {_fmt(m['iops'])} | {_fmt(m['mb_per_s'], 1)} "
                         f"| {_fmt(m['p50_us'], 1)} | {_fmt(m['p99_us'], 1)} | "
                         f"{_fmt(m.get('cpu_us_per_op'))} · "
                         f"{_fmt(m.get('initiator_cpu_us_per_op'))} | "
                         f"{_fmt(kib(m['master_rss_kib']), 1)} | "
                         f"{_fmt(kib(m['replica_rss_kib']), 1)} |")
    lines += ["", "Ratios, median of per-round ratios (IOPS below 1 and latency above 1: the "
              "cost of replication). CPU-bound IOPS: the IOPS ratio if both volumes' runs kept "
              "every core busy at their CPU cost per write (nodes + initiator, medians), i.e. "
              "the most replication's CPU cost allows on this machine:", "",
              "| workload | pair | IOPS | p50 | p99 | per-round IOPS | CPU-bound IOPS |",
              "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
    for w in r.get("cost") or []:
        for x in w["ratios"]:
            lines.append(f"| {w['name']} | {x['pair']} | {_fmt(x['iops'], 2)} | "
                         f"{_fmt(x['p50_us'], 2)} | {_fmt(x['p99_us'], 2)} | "
                         f"{', '.join(str(p) for p in x['iops_per_round'])} | "
                         f"{_fmt(x.get('cpu_bound_iops'), 2)} |")
    lines += ["", "### lz4 on the replication link (1 replica, medians)", "",
              "wire/raw: bytes the master sent after lz4 over bytes before it (headers + "
              "payloads), from its /metrics around each run.", "",
              "| workload | compression / data | IOPS | MB/s | p99 | wire/raw | master RSS |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for w in r.get("lz4") or []:
        for v, m in w["median"].items():
            lines.append(f"| {w['name']} | {v} | {_fmt(m['iops'])} | {_fmt(m['mb_per_s'], 1)} | "
                         f"{_fmt(m['p99_us'], 1)} | {_fmt(m['wire_over_raw'], 3)} | "
                         f"{_fmt(kib(m['master_rss_kib']), 1)} |")
    lines += ["", "| workload | pair | IOPS | p99 |", "| --- | --- | ---: | ---: |"]
    for w in r.get("lz4") or []:
        for x in w["ratios"]:
            lines.append(f"| {w['name']} | {x['pair']} | {_fmt(x['iops'], 2)} | "
                         f"{_fmt(x['p99_us'], 2)} |")
    lines += ["", f"### Resync after a replica node was down ({size} volume, 1 replica)", "",
              "The replica's node is stopped (SIGTERM), the share of the volume is written "
              "(seq: 1 MiB sequential writes; 4k: scattered 4 KiB random writes), the node is "
              "started again; seconds from its start until the copy is in-sync (the node's own "
              "start-up, until its ready line, in brackets), the master's raw and wire "
              "replication bytes meanwhile, and what the replica sent (its per-4 KiB hashes of "
              "the regions to compare, summaries, ACKs). Copies identical: `volume verify` "
              "compared the master and the copy that left and returned and found them "
              "identical, the writer wrote every op and the resync sent at least half the bytes "
              "changed (otherwise the row is an error, listed below).",
              "",
              "| changed | writes | MiB changed | seconds to in-sync | raw MiB sent | raw / changed "
              "| wire / changed | replica MiB sent | master RSS | copies identical |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    mib = lambda v: None if v is None else v / MIB
    for e in r.get("resync") or []:
        lines.append(f"| {e['percent']}% | {e.get('writes', 'seq')} | "
                     f"{e['changed_bytes'] // MIB} | "
                     f"{_fmt(e.get('seconds'), 2)} ({_fmt(e.get('node_start_seconds'), 2)}) | "
                     f"{_fmt(e['sent_raw_bytes'] / MIB, 1)} | "
                     f"{_fmt(e.get('raw_over_changed'), 3)} | "
                     f"{_fmt(e.get('wire_over_changed'), 3)} | "
                     f"{_fmt(mib(e.get('replica_sent_raw_bytes')), 2)} | "
                     f"{_fmt(kib(e.get('master_rss_kib')), 1)} | "
                     f"{_verdict(e)} |")
    if r["errors"]:
        lines += ["", "Errors:", ""] + [f"- {e}" for e in r["errors"]]
    return lines
