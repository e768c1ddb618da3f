/* Read a file and print it: the runner looks for the canary in the output. */
#include "hostile.h"

int main(int argc, char **argv) {
    if (argc != 2) usage("readfile PATH");
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) blocked(argv[1], errno);
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) blocked(argv[1], errno);
    buf[n] = 0;
    printf("%s\n", buf);
    escaped("read %zd bytes of %s", n, argv[1]);
}
