/* Fork until something stops us; every process then waits. Stops by
 * itself after 20 s so that a failed limit still ends. */
#include "hostile.h"
#include <signal.h>

int main(void) {
    long made = 0;
    alarm(20);
    for (;;) {
        pid_t p = fork();
        if (p < 0) {
            if (made == 0) blocked("fork", errno);
            /* Keep pushing: the limit must hold while we try. */
            usleep(1000);
            continue;
        }
        if (p == 0) made = 0;
        else made++;
        if (made > 100000) escaped("made %ld processes", made);
    }
}
