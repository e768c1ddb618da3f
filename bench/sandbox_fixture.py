"""What bench/sandbox.sh and bench/sandbox-phases.sh measure in.

A temporary directory holding a small workspace (20 files and a git
repository's protected paths), a state dir, the airlock builds to compare
(each front with its airlock-full beside it, as installed), the environment
the runs get, the prefix that runs them as another user, and bwrap's
command line in the configuration airlock is compared with.
"""

import os
import shutil
import tempfile


class Fixture:
    def __init__(self, as_user, builds):
        """`as_user`: "", "nobody" or a uid. `builds`: {name: path of an
        airlock front}; each is installed in its own dir, see `bins`."""
        self.dir = tempfile.mkdtemp(prefix="airlock-bench-")
        try:
            self._make(as_user, builds)
        except BaseException:
            self.remove()
            raise

    def _make(self, as_user, builds):
        os.chmod(self.dir, 0o755)
        self.ws = os.path.join(self.dir, "ws")
        self.state = os.path.join(self.dir, "state")
        os.mkdir(self.ws, 0o755)
        os.mkdir(self.state, 0o700)
        for i in range(20):
            with open(os.path.join(self.ws, "f%d.txt" % i), "w") as f:
                f.write("x" * 100)
        os.makedirs(os.path.join(self.ws, ".git/hooks"))
        with open(os.path.join(self.ws, ".git/config"), "w") as f:
            f.write("[core]\n")
        self.bins = {name: self._install(src, name) for name, src in builds.items()}
        self.prefix = []
        if as_user:
            uid = 65534 if as_user == "nobody" else int(as_user)
            for d, dirs, files in os.walk(self.dir):
                for x in dirs + files:
                    os.lchown(os.path.join(d, x), uid, uid)
            os.lchown(self.dir, uid, uid)
            self.prefix = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "--"]
        self.env = {"PATH": "/usr/bin:/bin", "HOME": self.dir, "XDG_STATE_HOME": self.state,
                    "XDG_CONFIG_HOME": os.path.join(self.dir, "config")}

    def _install(self, src, name):
        """Copy the front `src` (and airlock-full beside it) into dir/name."""
        d = os.path.join(self.dir, name)
        os.mkdir(d, 0o755)
        shutil.copy(src, os.path.join(d, "airlock"))
        os.chmod(os.path.join(d, "airlock"), 0o755)
        full = os.path.join(os.path.dirname(src), "airlock-full")
        if os.path.exists(full):
            shutil.copy(full, os.path.join(d, "airlock-full"))
        return os.path.join(d, "airlock")

    def airlock(self, name):
        """`airlock run -- /bin/true` of build `name` over the workspace."""
        return self.prefix + [self.bins[name], "run", "--workspace", self.ws, "--", "/bin/true"]

    def bwrap(self):
        """bwrap running /bin/true with the namespaces airlock makes (but
        cgroup), the system dirs read-only, /proc, /dev, a tmpfs /tmp and
        the workspace bound read-write."""
        cmd = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
               "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
        for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            p = "/" + d
            if os.path.islink(p):
                cmd += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                cmd += ["--ro-bind", p, p]
        cmd += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
                "--bind", self.ws, self.ws, "--chdir", self.ws, "/bin/true"]
        return self.prefix + cmd

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)
