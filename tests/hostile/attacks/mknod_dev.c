/* Read a raw block device: open one the view has, else make the node. */
#include "hostile.h"
#include <sys/stat.h>
#include <sys/sysmacros.h>

int main(int argc, char **argv) {
    if (argc != 4) usage("mknod_dev PATH MAJOR MINOR");
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        if (mknod("/tmp/hostile-dev", S_IFBLK | 0600, makedev(atoi(argv[2]), atoi(argv[3]))) < 0)
            blocked("mknod", errno);
        fd = open("/tmp/hostile-dev", O_RDONLY);
        if (fd < 0) blocked("open made node", errno);
    }
    char b[512];
    if (read(fd, b, sizeof b) != sizeof b) blocked("read device", errno);
    escaped("read 512 bytes of the raw device");
}
