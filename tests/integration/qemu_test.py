#!/usr/bin/env python3
"""QEMU's iSCSI driver against a real tandemd: qemu-img convert an image onto a volume and
compare it back; qemu-io writes patterns and reads them back. Prints "N passed, N failed".

usage: qemu_test.py --tandemd PATH --tandemctl PATH
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


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
    addr = "127.0.%d.%d" % (150 + os.getpid() % 50, 1 + (os.getpid() // 50) % 250)
    work = tempfile.mkdtemp(prefix="tandem-qemu-")
    data = os.path.join(work, "n1")
    log = open(os.path.join(work, "tandemd.log"), "w")
    d = subprocess.Popen([args.tandemd, "--node-name", "n1", "--bind", addr, "--data-dir", data],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = d.stdout.readline()
        if not line or " ready: " in line:
            break
    ctl = [args.tandemctl, "--server", "http://%s:8080" % addr,
           "--token-file", os.path.join(data, "admin.token")]
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
            subprocess.run(ctl + ["volume", "create", vol, "--size", "64MiB", "--block-size",
                                  str(bs)], check=True, capture_output=True)
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
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(timeout=30)
        except subprocess.TimeoutExpired:
            d.kill()
        log.close()
    passed = sum(results)
    failed = len(results) - passed
    if failed == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("logs in " + work)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
