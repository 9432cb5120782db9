#!/usr/bin/env python3
"""QEMU's iSCSI driver against a real tandemd: qemu-img convert an image onto a volume and
compare it back; qemu-io writes patterns and reads them back. Prints "N passed, N failed".

usage: qemu_test.py --tandemd PATH --tandemctl PATH
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tandem_node import Node, finish, loopback_address  # noqa: E402


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
    work = tempfile.mkdtemp(prefix="tandem-qemu-")
    node = Node(args.tandemd, args.tandemctl, work, loopback_address(251))
    if not node.start():
        print("tandemd did not start; log in " + node.log_path)
        print("0 passed, 1 failed")
        return 1
    addr = node.address
    results = []

    def check(name, cmd, expect_in=None, timeout=120):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        ok = p.returncode == 0 and (expect_in is None or expect_in in p.stdout)
        results.append(ok)
        print("%s %s" % ("ok  " if ok else "FAIL", name))
        if not ok:
            print(p.stdout[-2000:], p.stderr[-2000:])
        return ok

    try:
        for vol, bs in (("q512", 512), ("q4k", 4096)):
            node.ctl("volume", "create", vol, "--size", "64MiB", "--block-size", str(bs))
            url = "iscsi://%s/iqn.2026-11.dev.tandem:%s/0" % (addr, vol)
            image = os.path.join(work, vol + ".raw")
            with open(image, "wb") as f:
                f.write(os.urandom(24 << 20))
                f.write(b"\0" * (8 << 20))      # a run of zeros qemu-img may skip
                f.write(os.urandom(8 << 20))
            check("%s: qemu-img convert onto the volume" % vol,
                  ["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", image, url])
            check("%s: qemu-img compare reads it back identical" % vol,
                  ["qemu-img", "compare", "-f", "raw", "-F", "raw", image, url],
                  "Images are identical")
            check("%s: qemu-io writes patterns" % vol,
                  ["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c",
                   "write -P 0xa5 40M 3M", "-c", "write -P 0x11 63M 1M", url])
            check("%s: qemu-io reads the patterns back" % vol,
                  ["qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M", "-c",
                   "read -P 0xa5 40M 3M", "-c", "read -P 0x11 63M 1M", url])
            p = subprocess.run(["qemu-io", "-f", "raw", "-c", "read -P 0x77 0 4k", url],
                               capture_output=True, text=True)
            ok = "Pattern verification failed" in p.stdout + p.stderr
            results.append(ok)
            print("%s %s: a wrong pattern is detected" % ("ok  " if ok else "FAIL", vol))
            check("%s: qemu-img info sees the size" % vol, ["qemu-img", "info", url],
                  "64 MiB")
    finally:
        node.stop()
    return finish(results, work)


if __name__ == "__main__":
    sys.exit(main())
