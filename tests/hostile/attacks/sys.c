/* One system call from the seccomp deny list per invocation: `sys NAME`.
 * "escaped" means the call did what it is for. For calls that need a
 * capability, arguments are chosen so that a call that got past the
 * capability check fails harmlessly with something other than EPERM (bad
 * magic, NULL image), which is reported as an escape all the same. */
#include "hostile.h"
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif

struct clone_args_min {
    unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

/* Privileged calls: EPERM is the block; any other answer got past it. */
static void priv(const char *name, long r) {
    if (r < 0 && errno == EPERM) blocked(name, errno);
    escaped("%s answered %ld (errno %d: %s): past the permission check", name, r, r < 0 ? errno : 0,
            r < 0 ? strerror(errno) : "ok");
}

/* Calls any process may make: any failure is the block. */
static void plain(const char *name, long r) {
    if (r < 0) blocked(name, errno);
    escaped("%s succeeded (%ld)", name, r);
}

int main(int argc, char **argv) {
    if (argc != 2) usage("sys NAME");
    const char *n = argv[1];
    if (!strcmp(n, "io_uring_setup")) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        plain(n, syscall(SYS_io_uring_setup, 4, &p));
    }
    if (!strcmp(n, "ptrace")) plain(n, ptrace(PTRACE_TRACEME, 0, 0, 0));
    if (!strcmp(n, "process_vm_readv")) {
        pid_t c = fork();
        if (c == 0) { pause(); _exit(0); }
        static char src[16] = "HOSTILE";
        char dst[16];
        struct iovec l = {dst, sizeof dst}, r = {src, sizeof src};
        long x = syscall(SYS_process_vm_readv, c, &l, 1, &r, 1, 0);
        int e = errno;
        kill(c, SIGKILL);
        waitpid(c, 0, 0);
        errno = e;
        plain(n, x);
    }
    if (!strcmp(n, "process_vm_writev")) {
        static char buf[16];
        char src[16] = "HOSTILE";
        struct iovec l = {src, sizeof src}, r = {buf, sizeof buf};
        plain(n, syscall(SYS_process_vm_writev, getpid(), &l, 1, &r, 1, 0));
    }
    if (!strcmp(n, "keyctl")) plain(n, syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1));
    if (!strcmp(n, "add_key")) plain(n, syscall(SYS_add_key, "user", "hostile", "x", 1, KEY_SPEC_PROCESS_KEYRING));
    if (!strcmp(n, "request_key")) {
        long r = syscall(SYS_request_key, "user", "hostile-none", NULL, KEY_SPEC_PROCESS_KEYRING);
        if (r < 0 && errno == ENOKEY) escaped("request_key reached the keyring (ENOKEY)");
        plain(n, r);
    }
    if (!strcmp(n, "bpf")) {
        unsigned int attr[32];
        memset(attr, 0, sizeof attr);
        attr[0] = 2; /* BPF_MAP_TYPE_ARRAY */
        attr[1] = 4;
        attr[2] = 4;
        attr[3] = 1;
        plain(n, syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr));
    }
    if (!strcmp(n, "perf_event_open")) {
        struct perf_event_attr a;
        memset(&a, 0, sizeof a);
        a.type = PERF_TYPE_SOFTWARE;
        a.size = sizeof a;
        a.config = PERF_COUNT_SW_TASK_CLOCK;
        a.exclude_kernel = 1;
        a.exclude_hv = 1;
        plain(n, syscall(SYS_perf_event_open, &a, 0, -1, -1, 0));
    }
    if (!strcmp(n, "userfaultfd")) plain(n, syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY));
    if (!strcmp(n, "mount")) plain(n, mount("none", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(n, "umount2")) plain(n, umount2("/proc", MNT_DETACH));
    if (!strcmp(n, "pivot_root")) plain(n, syscall(SYS_pivot_root, "/tmp", "/tmp"));
    if (!strcmp(n, "open_tree")) plain(n, syscall(SYS_open_tree, AT_FDCWD, "/proc", 0));
    if (!strcmp(n, "open_tree_clone")) plain(n, syscall(SYS_open_tree, AT_FDCWD, "/", OPEN_TREE_CLONE));
    if (!strcmp(n, "move_mount")) plain(n, syscall(SYS_move_mount, AT_FDCWD, "/proc", AT_FDCWD, "/tmp", 0));
    if (!strcmp(n, "fsopen")) plain(n, syscall(SYS_fsopen, "tmpfs", 0));
    if (!strcmp(n, "unshare")) plain(n, unshare(CLONE_NEWUSER));
    if (!strcmp(n, "unshare_net")) plain(n, unshare(CLONE_NEWNET));
    if (!strcmp(n, "setns")) {
        int fd = open("/proc/self/ns/user", O_RDONLY);
        if (fd < 0) blocked("open /proc/self/ns/user", errno);
        long r = syscall(SYS_setns, fd, 0);
        if (r < 0 && errno == EINVAL) escaped("setns reached the namespace check (EINVAL)");
        plain(n, r);
    }
    if (!strcmp(n, "clone")) {
        long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (r == 0) _exit(0);
        if (r > 0) waitpid(r, 0, 0);
        plain(n, r);
    }
    if (!strcmp(n, "clone3")) {
        struct clone_args_min a;
        memset(&a, 0, sizeof a);
        a.flags = CLONE_NEWUSER;
        a.exit_signal = SIGCHLD;
        long r = syscall(SYS_clone3, &a, sizeof a);
        if (r == 0) _exit(0);
        if (r > 0) waitpid(r, 0, 0);
        plain(n, r);
    }
    if (!strcmp(n, "open_by_handle_at")) {
        char h[128];
        memset(h, 0, sizeof h);
        ((unsigned int *)h)[0] = 8;
        priv(n, syscall(SYS_open_by_handle_at, AT_FDCWD, h, O_RDONLY));
    }
    if (!strcmp(n, "kexec_load")) priv(n, syscall(SYS_kexec_load, 0, 100000, NULL, 0));
    if (!strcmp(n, "kexec_file_load")) priv(n, syscall(SYS_kexec_file_load, -1, -1, 0, "", 0x10));
    if (!strcmp(n, "init_module")) priv(n, syscall(SYS_init_module, NULL, 0, ""));
    if (!strcmp(n, "finit_module")) priv(n, syscall(SYS_finit_module, -1, "", 0));
    if (!strcmp(n, "reboot")) priv(n, syscall(SYS_reboot, 0x1, 0x2, LINUX_REBOOT_CMD_CAD_OFF, NULL));
    if (!strcmp(n, "swapon")) priv(n, syscall(SYS_swapon, "/nonexistent-hostile", 0));
    usage("unknown syscall name");
}
