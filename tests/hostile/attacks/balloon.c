/* Allocate and touch MB megabytes, 1 MiB at a time. */
#include "hostile.h"

int main(int argc, char **argv) {
    if (argc != 2) usage("balloon MB");
    long mb = atol(argv[1]);
    for (long i = 0; i < mb; i++) {
        char *p = malloc(1 << 20);
        if (!p) blocked("malloc", ENOMEM);
        memset(p, 0x5a, 1 << 20);
    }
    escaped("allocated and touched %ld MiB", mb);
}
