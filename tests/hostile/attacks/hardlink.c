/* Hard-link a file from outside the view into the workspace, then read it. */
#include "hostile.h"

int main(int argc, char **argv) {
    if (argc != 3) usage("hardlink SRC DST");
    if (link(argv[1], argv[2]) < 0) {
        /* Also try through an O_PATH descriptor (AT_EMPTY_PATH). */
        int fd = open(argv[1], O_PATH);
        if (fd < 0 || linkat(fd, "", AT_FDCWD, argv[2], AT_EMPTY_PATH) < 0) blocked("link", errno);
    }
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) blocked("open link", errno);
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) blocked("read link", errno);
    buf[n] = 0;
    printf("%s\n", buf);
    escaped("hard link %s -> %s readable", argv[2], argv[1]);
}
