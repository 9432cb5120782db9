#!/usr/bin/env python3
"""Runs libiscsi's conformance suite (iscsi-test-cu) against a real tandemd, family by family.

Starts tandemd on its own loopback address with a temporary data dir, creates a fresh
volume for each family, runs `iscsi-test-cu -d -S -t ALL.<Family> URL URL` under a
timeout (the second URL serves the MultipathIO tests), and counts verdicts per test from
CUnit's output (a test that printed [SKIPPED] counts as skipped, not passed, even though
CUnit says "passed"). Prints a table and a closing "N passed, N failed, N skipped" line;
exits 1 when a test fails, a family times out, or a test skips outside the families whose
features Tandem does not claim.

usage: iscsi_test_cu.py --tandemd PATH --tandemctl PATH [--family F ...] [--json OUT]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tandem_node import Node, loopback_address  # noqa: E402

# Families whose features Tandem does not claim: their skips are expected.
UNCLAIMED = {
    "ExtendedCopy", "ReceiveCopyResults", "Sanitize", "WriteAtomic16",
    "ReadDefectData10", "ReadDefectData12", "NoMedia",
}
# Single tests the suite skips for a property Tandem's LUNs do not have, with the reason.
ACCEPTED_SKIPS = {
    # Removable-medium tests: volumes are not removable media (RMB=0).
    "PreventAllow.*": "not a removable medium",
    "StartStopUnit.Simple": "not a removable medium",
    # Needs a LUN that is write-protected before the suite starts.
    "ReadOnly.ReadOnlySBC": "the volume under test is writable",
    # Need more than one logical block per physical block (LBPPB >= 2); Tandem reports
    # 1:1 (target/scsi/inquiry.h says why).
    "WriteSame10.UnmapUnaligned": "one logical block per physical block",
    "WriteSame16.UnmapUnaligned": "one logical block per physical block",
    "WriteSame10.InvalidDataOutSize": "one logical block per physical block",
    "WriteSame16.InvalidDataOutSize": "one logical block per physical block",
    "CompareAndWrite.InvalidDataOutSize": "one logical block per physical block",
}


def skip_accepted(name):
    family = name.split(".")[0]
    return (family in UNCLAIMED or name in ACCEPTED_SKIPS or
            family + ".*" in ACCEPTED_SKIPS)
FAMILY_TIMEOUT_S = 180


def families():
    out = subprocess.run(["iscsi-test-cu", "-l"], capture_output=True, text=True).stdout
    return [l.split(".")[1] for l in out.splitlines() if re.fullmatch(r"ALL\.[A-Za-z0-9]+", l)]


def parse(output):
    """Returns {test: verdict} from CUnit's verbose output."""
    verdicts = {}
    current = None
    for line in output.splitlines():
        m = re.match(r"\s+Test: (\S+) \.\.\.(.*)$", line)
        if m:
            current = m.group(1)
            verdicts[current] = "passed"
            line = m.group(2)
        if current is None:
            continue
        if "[SKIPPED]" in line:
            verdicts[current] = "skipped"
        # CUnit's own verdict is a bare FAILED; "[FAILED] ..." lines are libiscsi's logging,
        # printed also by tests that expect the failure they provoke.
        if re.search(r"(?<!\[)FAILED(?!\])", line) and verdicts[current] != "skipped":
            verdicts[current] = "failed"
    return verdicts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandemd", required=True)
    ap.add_argument("--tandemctl", required=True)
    ap.add_argument("--family", action="append")
    ap.add_argument("--json")
    ap.add_argument("--address", default=loopback_address(253))
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    if not shutil.which("iscsi-test-cu"):
        print("iscsi-test-cu not found (Debian package libiscsi-bin)", file=sys.stderr)
        return 1

    work = tempfile.mkdtemp(prefix="tandem-conformance-")
    node = Node(args.tandemd, args.tandemctl, work, args.address)
    if not node.start():
        print("tandemd did not start; log in " + node.log_path, file=sys.stderr)
        node.stop()
        return 1

    results = {}
    failed_families = []
    fams = args.family or families()
    try:
        for i, fam in enumerate(fams):
            vol = "cu%d" % i
            node.ctl("volume", "create", vol, "--size", "128MiB")
            url = "iscsi://%s/iqn.2026-11.dev.tandem:%s/0" % (args.address, vol)
            try:
                p = subprocess.run(["iscsi-test-cu", "-d", "-S", "-t", "ALL." + fam, url, url],
                                   capture_output=True, text=True, timeout=FAMILY_TIMEOUT_S)
                out = p.stdout + p.stderr
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
                failed_families.append(fam)
                print("TIMEOUT in family %s" % fam)
            if args.keep_logs:
                with open(os.path.join(work, fam + ".log"), "w") as f:
                    f.write(out)
            verdicts = parse(out)
            if not verdicts:
                failed_families.append(fam)
                print("no verdicts from family %s:\n%s" % (fam, out[-2000:]))
            for t, v in verdicts.items():
                results["%s.%s" % (fam, t)] = v
                if v == "failed":
                    print("FAILED %s.%s" % (fam, t))
                    tail = [l for l in out.splitlines() if "Test: " + t in l or "[FAILED]" in l]
                    for l in tail[:6]:
                        print("    " + l.strip())
            node.ctl("volume", "delete", vol, check=False)
    finally:
        node.stop()

    counts = {"passed": 0, "failed": 0, "skipped": 0}
    bad_skips = []
    for name, v in results.items():
        counts[v] += 1
        if v == "skipped" and not skip_accepted(name):
            bad_skips.append(name)
    for name in bad_skips:
        print("UNEXPECTED SKIP %s" % name)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"counts": counts, "results": results, "families": len(fams),
                       "unexpected_skips": bad_skips, "timeouts": failed_families}, f, indent=1)
    print("families: %d, tests: %d" % (len(fams), len(results)))
    ok = counts["failed"] == 0 and not failed_families and not bad_skips
    if ok and not args.keep_logs:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("logs in " + work)
    print("%d passed, %d failed, %d skipped" % (counts["passed"], counts["failed"],
                                               counts["skipped"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
