/* Write 1 MiB chunks to FILE until MB are written or something stops us. */
#include "hostile.h"

int main(int argc, char **argv) {
    if (argc != 3) usage("fill FILE MB");
    static char buf[1 << 20];
    memset(buf, 0x41, sizeof buf);
    long mb = atol(argv[2]);
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) blocked("open", errno);
    for (long i = 0; i < mb; i++)
        if (write(fd, buf, sizeof buf) != sizeof buf) blocked("write", errno);
    escaped("wrote %ld MiB", mb);
}
