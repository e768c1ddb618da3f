/* Terminal injection on stdin: `tty sti` pushes a command into the input
 * queue with TIOCSTI (the caller's shell would run it after we exit);
 * `tty linux` tries TIOCLINUX. */
#include "hostile.h"
#include <sys/ioctl.h>

int main(int argc, char **argv) {
    if (argc != 2) usage("tty sti|linux");
    if (!isatty(0)) {
        printf("RESULT unjudged: stdin is not a terminal\n");
        return 2;
    }
    if (!strcmp(argv[1], "sti")) {
        const char *cmd = "echo HOSTILE-INJECTED\n";
        for (const char *c = cmd; *c; c++)
            if (ioctl(0, TIOCSTI, c) < 0) blocked("ioctl(TIOCSTI)", errno);
        escaped("injected %zu characters with TIOCSTI", strlen(cmd));
    }
    if (!strcmp(argv[1], "linux")) {
        char sub = 12; /* TIOCL_GETFGCONSOLE */
        if (ioctl(0, TIOCLINUX, &sub) < 0) blocked("ioctl(TIOCLINUX)", errno);
        escaped("TIOCLINUX answered");
    }
    usage("tty sti|linux");
}
