"""bench/failover.py: the failover and memory figures of bench/compare (via bench/replication.py).

failover  A 3-node cluster with tandemd's default timings (heartbeat 0.5 s, node timeout 3 s).
          Each round: a 1-replica volume mastered by n2, a QD 1 4 KiB random writer
          (tandem-bench --timeline) through a node that presents the volume but holds no copy
          of it (its I/O is forwarded to the master), SIGKILL of n2 while it writes. From the
          writer's own timeline (CLOCK_MONOTONIC, the clock of time.monotonic()): seconds from
          the SIGKILL to the first write completed after the stall, i.e. on the new master.
          Also, from polling the controller: seconds until a promotion is seen and until a
          replacement replica is placed and in-sync. n2 is started again before the next round.
memory    One tandemd with N idle 1 GiB volumes (0 replicas): resident and peak RSS, threads;
          then 10 of them busy at once (tandem-bench each): the peak RSS over that run.

Python 3 standard library only; imported by replication.py, whose Cluster it reuses.
"""

import os
import signal
import statistics
import subprocess
import sys
import time

from replication import ClusterError

DEFAULT_TIMINGS = {"heartbeat_ms": 500, "node_timeout_ms": 3000}  # tandemd's defaults
SMOKE_TIMINGS = {"heartbeat_ms": 100, "node_timeout_ms": 800}   # the smoke's: seconds, not minutes
MEMORY_VOLUMES = 100
MEMORY_BUSY = 10
MIB = 1 << 20


def _log(msg):
    print(f"[compare] {msg}", flush=True, file=sys.stderr)


def proc_status(pid):
    """VmRSS and VmHWM (KiB) and Threads of a process, from /proc/PID/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def parse_timeline(path):
    """[(issued, completed, ok)] in completion order, from a tandem-bench --timeline file."""
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            issued, completed, _kind, status = line.split()
            out.append((float(issued), float(completed), status == "ok"))
    return out


def analyse_timeline(entries, t_kill):
    """Figures of one round: the stall that contains the kill is the longest gap between two
    completions that ends after t_kill; the write ending it is the first on the new master."""
    done = sorted(c for _, c, ok in entries if ok)
    out = {"writes_before_kill": sum(1 for c in done if c <= t_kill),
           "writes_after_kill": sum(1 for c in done if c > t_kill),
           "failed_writes": sum(1 for _, _, ok in entries if not ok)}
    best = None
    for prev, cur in zip([None] + done, done):
        if cur <= t_kill:
            continue
        gap = cur - (prev if prev is not None else t_kill)
        if best is None or gap > best[0]:
            best = (gap, cur)
    if best is not None and out["writes_before_kill"] > 0:
        out["seconds_to_first_write"] = round(best[1] - t_kill, 3)
        out["longest_stall_seconds"] = round(best[0], 3)
        # The write that ended the stall waited through it (delayed, not failed and retried):
        # its own latency covers most of the stall.
        stalled = [c - i for i, c, ok in entries if ok and c == best[1]]
        out["stalled_write_latency_seconds"] = round(stalled[0], 3) if stalled else None
    return out


class _Prober:
    """Short tandem-bench runs used as "does this node present the volume yet?"."""

    def __init__(self, bench):
        self.bench = bench

    def writes(self, url, timeout=10):
        p = subprocess.run([self.bench, "--url", url, "--rw", "randwrite", "--ops", "1",
                            "--range", "1MiB", "--timeout", "5"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=timeout)
        return p.returncode == 0

    def wait_writes(self, url, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.writes(url):
                return True
            time.sleep(0.2)
        return False


def _copy_nodes(copies):
    master = [c["node"] for c in copies if c.get("role") == "master"]
    in_sync = [c["node"] for c in copies
               if c.get("role") != "master" and c.get("state") == "in-sync"]
    return (master[0] if master else None), in_sync


def failover_round(cluster, args, rnd, size, timeout, errors):
    """One round: returns a dict with the figures (or an "error")."""
    victim = cluster.node("n2")
    vol = f"fo{rnd}"
    cluster.create_volume(vol, size, 1, False, master=victim.name)
    cluster.wait_in_sync(vol, 1, timeout=60)
    replica = _copy_nodes(cluster.copies(vol))[1][0]
    # Through a node that presents the volume without holding a copy (the controller is never
    # the victim: controller failover is not built).
    via = next(n for n in cluster.nodes if n.name not in (victim.name, replica))
    url = f"iscsi://{via.addr}:3260/iqn.2026-11.dev.tandem:{vol}/0"
    prober = _Prober(args.bench)
    entry = {"round": rnd, "volume": vol, "master": victim.name, "replica": replica,
             "writer_via": via.name}
    if not prober.wait_writes(url, 20):
        raise ClusterError(f"{vol}: {via.name} does not present the volume after 20 s")
    timeline = os.path.join(args.workdir, f"failover-{rnd}.timeline")
    writer = subprocess.Popen([args.bench, "--url", url, "--rw", "randwrite", "--bs", "4k",
                               "--qd", "1", "--seconds", str(timeout + 30), "--range",
                               str(size), "--seed", str(args.seed + rnd), "--timeline",
                               timeline], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        # Lets the writer log in and write for a while; whether it did is checked from its
        # timeline (writes_before_kill), not assumed from this pause.
        time.sleep(0.5 if args.smoke else 1.5)
        if writer.poll() is not None:
            raise ClusterError(f"{vol}: writer exited early: {writer.stderr.read().strip()}")
        t_kill = time.monotonic()
        victim.proc.kill()
        entry["kill_monotonic"] = round(t_kill, 6)
        victim.proc.wait(timeout=10)
        victim.proc = None
        deadline = t_kill + timeout
        while time.monotonic() < deadline:
            master, in_sync = _copy_nodes(cluster.copies(vol))
            now = time.monotonic()
            if master and master != victim.name and "promoted_seen_seconds" not in entry:
                entry["promoted_seen_seconds"] = round(now - t_kill, 2)
                entry["new_master"] = master
            if (master and master != victim.name
                    and any(n not in (victim.name, master) for n in in_sync)):
                entry["replica_restored_seconds"] = round(now - t_kill, 2)
                entry["replacement"] = [n for n in in_sync if n != victim.name][0]
                break
            if writer.poll() is not None:
                break
            time.sleep(0.1)
        if "replica_restored_seconds" not in entry:
            errors.append(f"failover round {rnd}: no replacement replica in-sync after "
                          f"{timeout} s")
    finally:
        if writer.poll() is None:
            writer.send_signal(signal.SIGINT)  # tandem-bench drains and reports
        try:
            out, err = writer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(writer.pid, signal.SIGKILL)
            out, err = writer.communicate()
    if writer.returncode != 0:
        entry["error"] = f"writer exit {writer.returncode}: {err.strip()[-300:]}"
        errors.append(f"failover round {rnd}: {entry['error']}")
    try:
        entry.update(analyse_timeline(parse_timeline(timeline), t_kill))
    except (OSError, ValueError) as e:
        entry["error"] = f"timeline: {e}"
        errors.append(f"failover round {rnd}: {entry['error']}")
    if "seconds_to_first_write" not in entry and "error" not in entry:
        entry["error"] = "no write before the kill or none after it"
        errors.append(f"failover round {rnd}: {entry['error']}")
    _log(f"failover round {rnd}: first write on the new master "
         f"{entry.get('seconds_to_first_write', '—')} s after SIGKILL (promotion seen "
         f"{entry.get('promoted_seen_seconds', '—')} s, replica restored "
         f"{entry.get('replica_restored_seconds', '—')} s; {entry.get('writes_before_kill')} "
         f"writes before, {entry.get('writes_after_kill')} after, "
         f"{entry.get('failed_writes')} failed)")
    cluster.start_node(victim)
    cluster.wait_nodes_up()
    return entry


def _summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def failover(args, cluster_factory, smoke):
    """The failover section; cluster_factory(heartbeat_ms, node_timeout_ms) -> a Cluster not
    yet started. Returns a JSON-able dict; failures go into its "reason" / "errors"."""
    timings = SMOKE_TIMINGS if smoke else DEFAULT_TIMINGS
    rounds = 1 if smoke else max(3, args.rounds)
    size = 16 * MIB if smoke else 256 * MIB
    errors = []
    result = {"available": False, "reason": None, "timings": timings, "rounds": [],
              "volume_bytes": size, "errors": errors}
    cluster = cluster_factory(timings["heartbeat_ms"], timings["node_timeout_ms"])
    try:
        cluster.start()
        result["available"] = True
        for rnd in range(1, rounds + 1):
            result["rounds"].append(failover_round(cluster, args, rnd, size,
                                                   30 if smoke else 60, errors))
    except (ClusterError, subprocess.SubprocessError, OSError, ValueError, KeyError,
            StopIteration, IndexError) as e:
        result["reason"] = f"{type(e).__name__}: {e}"
        errors.append(f"failover: {result['reason']}")
        _log(f"failover: {e}")
    finally:
        cluster.stop()
    for key in ("seconds_to_first_write", "promoted_seen_seconds", "replica_restored_seconds"):
        result[key] = _summary([r.get(key) for r in result["rounds"]])
    return result


def memory(args, cluster_factory, smoke):
    """One tandemd, N idle volumes, then MEMORY_BUSY of them busy at once."""
    count = 10 if smoke else MEMORY_VOLUMES
    busy = 2 if smoke else MEMORY_BUSY
    seconds = 1 if smoke else max(5, args.seconds)
    errors = []
    result = {"available": False, "reason": None, "volumes": count, "busy": busy,
              "busy_seconds": seconds, "errors": errors}
    cluster = cluster_factory(None, None)
    try:
        cluster.start()
        node = cluster.master
        pid = node.pid()
        result["empty"] = proc_status(pid)
        for i in range(count):
            cluster.create_volume(f"m{i}", 1 << 30, 0, False)
        # Every volume presented: a write through the last one created succeeds.
        if not _Prober(args.bench).wait_writes(cluster.url(f"m{count - 1}"), 30):
            raise ClusterError(f"m{count - 1} not presented after 30 s")
        time.sleep(1)  # let any per-volume start-up settle; RSS is read, not asserted
        result["idle"] = proc_status(pid)
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        procs = []
        for i in range(busy):
            # Half small random writes at QD 32, half 1 MiB sequential writes at QD 8 (the
            # largest buffers), each on its own volume, all at once.
            w = (["--rw", "randwrite", "--bs", "4k", "--qd", "32"] if i % 2 == 0 else
                 ["--rw", "write", "--bs", "1m", "--qd", "8"])
            procs.append(subprocess.Popen(
                [args.bench, "--url", cluster.url(f"m{i}"), "--seconds", str(seconds),
                 "--range", "64MiB", "--seed", str(args.seed + i)] + w,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                start_new_session=True))
        for i, p in enumerate(procs):
            try:
                _, err = p.communicate(timeout=seconds + 120)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                _, err = p.communicate()
            if p.returncode != 0:
                errors.append(f"memory: busy writer {i}: exit {p.returncode}: {err.strip()[-200:]}")
        result["busy_peak"] = proc_status(pid)
        result["available"] = True
    except (ClusterError, subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
        result["reason"] = f"{type(e).__name__}: {e}"
        errors.append(f"memory: {result['reason']}")
        _log(f"memory: {e}")
    finally:
        cluster.stop()
    idle, peak = result.get("idle", {}), result.get("busy_peak", {})
    _log(f"memory: {count} idle volumes: RSS {idle.get('VmRSS', 0) / 1024:.1f} MiB (peak "
         f"{idle.get('VmHWM', 0) / 1024:.1f}), {idle.get('Threads')} threads; {busy} busy: peak "
         f"{peak.get('VmHWM', 0) / 1024:.1f} MiB")
    return result


# ----------------------------------------------------------------------------- markdown


def _mib(kib):
    return "—" if kib is None else f"{kib / 1024:.1f}"


def markdown(fo, mem):
    lines = []
    if fo is not None:
        t = fo["timings"]
        lines += ["", f"### Failover (heartbeat {t['heartbeat_ms']} ms, node timeout "
                  f"{t['node_timeout_ms']} ms)", ""]
        if not fo["rounds"]:
            lines.append(f"Not measured: {fo.get('reason')}")
        else:
            lines += ["A 1-replica volume mastered by n2; a 4 KiB random writer at QD 1 through a "
                      "node that presents the volume without holding a copy (I/O forwarded); "
                      "SIGKILL of n2. From the writer's own timeline: seconds from the SIGKILL to "
                      "the first write completed after the stall (on the new master). Promotion "
                      "and replacement replica: as seen polling the controller every 0.1 s.", "",
                      "| round | first write after SIGKILL (s) | promotion seen (s) | "
                      "replacement in-sync (s) | writes before / after | failed |",
                      "| ---: | ---: | ---: | ---: | ---: | ---: |"]
            for r in fo["rounds"]:
                lines.append(f"| {r['round']} | {r.get('seconds_to_first_write', '—')} | "
                             f"{r.get('promoted_seen_seconds', '—')} | "
                             f"{r.get('replica_restored_seconds', '—')} | "
                             f"{r.get('writes_before_kill', '—')} / "
                             f"{r.get('writes_after_kill', '—')} | "
                             f"{r.get('failed_writes', '—')} |")
            s = fo.get("seconds_to_first_write")
            if s:
                lines += ["", f"Median {s['median']} s (range {s['min']}–{s['max']}, "
                          f"{s['n']} rounds)."]
        if fo["errors"]:
            lines += ["", "Errors:", ""] + [f"- {e}" for e in fo["errors"]]
    if mem is not None:
        lines += ["", "### Memory of one tandemd", ""]
        if not mem.get("available"):
            lines.append(f"Not measured: {mem.get('reason')}")
        else:
            idle, peak = mem["idle"], mem["busy_peak"]
            lines += [f"{mem['volumes']} volumes of 1 GiB, 0 replicas, on one node; then "
                      f"{mem['busy']} of them written at once for {mem['busy_seconds']} s "
                      "(half 4 KiB random QD 32, half 1 MiB sequential QD 8).", "",
                      "| state | RSS MiB | peak RSS MiB | threads |", "| --- | ---: | ---: | ---: |",
                      f"| no volumes | {_mib(mem['empty'].get('VmRSS'))} | "
                      f"{_mib(mem['empty'].get('VmHWM'))} | {mem['empty'].get('Threads')} |",
                      f"| {mem['volumes']} idle volumes | {_mib(idle.get('VmRSS'))} | "
                      f"{_mib(idle.get('VmHWM'))} | {idle.get('Threads')} |",
                      f"| {mem['busy']} busy | {_mib(peak.get('VmRSS'))} | "
                      f"{_mib(peak.get('VmHWM'))} | {peak.get('Threads')} |"]
        if mem["errors"]:
            lines += ["", "Errors:", ""] + [f"- {e}" for e in mem["errors"]]
    return lines
