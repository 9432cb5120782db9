#!/usr/bin/env python3
"""The web console in real headless Chromium against a real tandemd: the page signs in with
the admin token, renders the volumes, nodes and events it fetched from the REST API, and
shows no data without a token. Prints "N passed, N failed".

usage: console_test.py --tandemd PATH --tandemctl PATH [--screenshot OUT.png]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from tandem_node import Node, finish, loopback_address  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=8000"]


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandemd", required=True)
    ap.add_argument("--tandemctl", required=True)
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    browser = chromium()
    if not browser:
        print("chromium not found (Debian package chromium)")
        print("0 passed, 1 failed")
        return 1
    work = tempfile.mkdtemp(prefix="tandem-browser-")
    node = Node(args.tandemd, args.tandemctl, work, loopback_address(252))
    if not node.start():
        print("tandemd did not start; log in " + node.log_path)
        print("0 passed, 1 failed")
        return 1
    addr, token = node.address, node.token
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print("%s %s" % ("ok  " if ok else "FAIL", name))
        if not ok and detail:
            print(detail[-3000:])

    def dump(url):
        profile = tempfile.mkdtemp(prefix="chromium-", dir=work)
        p = subprocess.run([browser] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile,
                                                        "--dump-dom", url],
                           capture_output=True, text=True, timeout=120)
        return p.stdout

    try:
        node.ctl("volume", "create", "console-demo", "--size", "3GiB", "--failure-mode", "soft")
        dom = dump("http://%s:8080/#token=%s" % (addr, token))
        check("the console renders the volume from the API",
              "console-demo" in dom and "3GiB" in dom and "soft" in dom, dom)
        check("the console shows the iSCSI target name",
              "iqn.2026-11.dev.tandem:console-demo" in dom, dom)
        check("the console lists the node", ">n1<" in dom and addr in dom, dom)
        check("the console shows the event log", "volume-created" in dom, dom)
        check("the cluster line is filled", "1/1 nodes online" in dom, dom)
        check("the token is not left in the address bar or page", token not in dom, dom)
        anon = dump("http://%s:8080/" % addr)
        check("without a token no data is shown", "console-demo" not in anon and
              "Sign in with the admin token" in anon, anon)
        bad = dump("http://%s:8080/#token=wrong" % addr)
        check("a wrong token shows the API's refusal", "console-demo" not in bad and
              "bearer token" in bad, bad)
        if args.screenshot:
            profile = tempfile.mkdtemp(prefix="chromium-", dir=work)
            subprocess.run([browser] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile,
                                                        "--window-size=1200,700",
                                                        "--screenshot=" + args.screenshot,
                                                        "http://%s:8080/#token=%s" % (addr, token)],
                           capture_output=True, timeout=120)
    finally:
        node.stop()
    return finish(results, work)


if __name__ == "__main__":
    sys.exit(main())
