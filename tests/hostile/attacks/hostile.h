/* Shared by the hostile attack programs. Each program tries one escape and
 * reports what the kernel answered: "RESULT escaped: ..." with exit 0 when
 * the attempt worked, "RESULT blocked: ..." with exit 1 when it did not.
 * The runner judges from the host side first (canaries, listeners, host
 * processes); this line is the attack's own account. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void __attribute__((noreturn, format(printf, 1, 2))) escaped(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("RESULT escaped: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    exit(0);
}

static void __attribute__((noreturn)) blocked(const char *what, int err) {
    printf("RESULT blocked: %s: %s (errno %d)\n", what, strerror(err), err);
    fflush(stdout);
    exit(1);
}

static void __attribute__((noreturn, unused)) usage(const char *u) {
    fprintf(stderr, "usage: %s\n", u);
    exit(2);
}
