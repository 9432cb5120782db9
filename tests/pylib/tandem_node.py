"""A real tandemd for the Python-driven tests (QEMU, conformance, browser): started on its own
loopback address with a temporary data dir, awaited by its ready line, stopped with SIGTERM.
Standard library only."""
import os
import select
import signal
import subprocess
import time


def loopback_address(second_octet):
    """127.<second_octet>.x.y, distinct per process, so tests can run side by side. The C++
    tests use second octets 100-249 and bench/compare 127.0.0.x: Python tests take 250 up."""
    pid = os.getpid()
    return "127.%d.%d.%d" % (second_octet, 1 + (pid // 250) % 250, 1 + pid % 250)


def loopback_addresses(second_octet, count):
    """`count` distinct addresses next to loopback_address(second_octet), for a cluster."""
    base = loopback_address(second_octet).rsplit(".", 1)
    last = int(base[1])
    return ["%s.%d" % (base[0], 1 + (last - 1 + i) % 250) for i in range(count)]


class Node:
    def __init__(self, tandemd, tandemctl, work, address, name="n1", extra=None,
                 controller=None, netns=None):
        """extra: more tandemd arguments. controller: the controller's Node, whose admin
        token tandemctl uses (a joined node has none of its own). netns: a network namespace
        (`ip netns` name) the daemon and its tandemctl calls run in; None: this one."""
        self.tandemd = tandemd
        self.tandemctl = tandemctl
        self.address = address
        self.name = name
        self.extra = list(extra or [])
        self.controller = controller
        self.netns = netns
        self.data = os.path.join(work, name)
        self.log_path = os.path.join(work, name + ".log")
        self.proc = None

    @property
    def prefix(self):
        """What runs a command in this node's network namespace (empty: none)."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    @property
    def url(self):
        return "http://%s:8080" % self.address

    @property
    def token(self):
        if self.controller is not None:
            return self.controller.token
        with open(os.path.join(self.data, "admin.token")) as f:
            return f.read().strip()

    def start(self, timeout=30):
        """Starts the daemon and waits (bounded) for its ready line; False if it never came."""
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            self.prefix + [self.tandemd, "--node-name", self.name, "--bind", self.address,
             "--data-dir", self.data] + self.extra, stdout=subprocess.PIPE, stderr=log)
        log.close()
        seen = b""
        deadline = time.time() + timeout
        while time.time() < deadline and b" ready: " not in seen:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break  # exited
                seen += chunk
        return b" ready: " in seen

    def ctl(self, *args, check=True):
        return subprocess.run(self.prefix + [self.tandemctl, "--server", self.url, "--token",
                                             self.token] + list(args),
                              check=check, capture_output=True, text=True)

    def kill(self):
        """SIGKILL: a crash, no clean shutdown."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self):
        if not self.proc:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def recorder(results):
    """record(name, ok, detail=""): appends ok to `results`, prints "ok  NAME" or "FAIL NAME"
    (and the tail of `detail` on failure), returns ok."""
    def record(name, ok, detail=""):
        results.append(bool(ok))
        print("%s %s" % ("ok  " if ok else "FAIL", name), flush=True)
        if not ok and detail:
            print(str(detail)[-3000:], flush=True)
        return ok
    return record


def finish(results, work):
    """Prints the closing "N passed, N failed" line, keeps `work` only when something
    failed, and returns the exit status."""
    import shutil
    passed = sum(1 for ok in results if ok)
    failed = len(results) - passed
    if failed == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("logs in " + work)
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1
