/* Other system call ABIs: `abi x32` makes an x32 call (bit 0x40000000),
 * `abi int80` the i386 `unshare(CLONE_NEWUSER)` through int 0x80. A filter
 * that only checks x86_64 numbers would let both through. */
#include "hostile.h"
#include <sched.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    if (argc != 2) usage("abi x32|int80");
    if (!strcmp(argv[1], "x32")) {
        long r;
        /* x32 unshare is 272 | 0x40000000 (the x86_64 number). */
        long nr = 272 | 0x40000000L;
        long flags = CLONE_NEWUSER;
        __asm__ volatile("syscall" : "=a"(r) : "0"(nr), "D"(flags) : "rcx", "r11", "memory");
        if (r < 0) blocked("x32 unshare(CLONE_NEWUSER)", (int)-r);
        escaped("x32 unshare(CLONE_NEWUSER) returned %ld", r);
    }
    if (!strcmp(argv[1], "int80")) {
        long r;
        long nr = 310; /* i386 unshare */
        long flags = CLONE_NEWUSER;
        __asm__ volatile("int $0x80" : "=a"(r) : "0"(nr), "b"(flags) : "memory");
        if (r < 0) blocked("i386 unshare(CLONE_NEWUSER) via int 0x80", (int)-r);
        escaped("i386 unshare(CLONE_NEWUSER) returned %ld", r);
    }
    usage("abi x32|int80");
}
