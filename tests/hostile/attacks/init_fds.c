/* Reach the sandbox init's descriptors through /proc/1/fd from the first
 * instruction on: its status pipe carries the report the parent takes as
 * the run's outcome. A write end found gets a forged report (exit 42). */
#include "hostile.h"
#include <sys/stat.h>
#include <time.h>

int main(void) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int err = 0;
    for (;;) {
        for (int n = 0; n < 64; n++) {
            char p[32];
            snprintf(p, sizeof p, "/proc/1/fd/%d", n);
            int fd = open(p, O_WRONLY | O_NONBLOCK);
            if (fd < 0) {
                if (errno != ENOENT) err = errno;
                continue;
            }
            struct stat st;
            if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)) {
                /* EndReport: wait status (exit 42), cpu µs, max RSS KiB. */
                unsigned char rep[24] = {0};
                int status = 42 << 8;
                memcpy(rep, &status, sizeof status);
                ssize_t w = write(fd, rep, sizeof rep);
                escaped("opened init's descriptor %d (a pipe) and wrote %zd bytes to it", n, w);
            }
            escaped("opened init's descriptor %d", n);
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > 200000000L) break;
    }
    blocked("open /proc/1/fd/N", err ? err : ENOENT);
}
