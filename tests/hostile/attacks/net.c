/* Network attempts: tcp HOST PORT | udp HOST PORT | unix PATH | abstract NAME
 * | packet | netlink | vsock. */
#include "hostile.h"
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv) {
    if (argc < 2) usage("net tcp|udp HOST PORT | unix PATH | abstract NAME | packet | netlink | vsock");
    const char *k = argv[1];
    if (!strcmp(k, "tcp") || !strcmp(k, "udp")) {
        if (argc != 4) usage("net tcp|udp HOST PORT");
        int s = socket(AF_INET, strcmp(k, "tcp") ? SOCK_DGRAM : SOCK_STREAM, 0);
        if (s < 0) blocked("socket", errno);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        if (!strcmp(k, "tcp")) {
            if (connect(s, (void *)&a, sizeof a) < 0) blocked("connect", errno);
            if (write(s, "HOSTILE-TCP\n", 12) < 0) blocked("write", errno);
            escaped("connected to %s:%s", argv[2], argv[3]);
        }
        if (sendto(s, "HOSTILE-UDP\n", 12, 0, (void *)&a, sizeof a) < 0) blocked("sendto", errno);
        escaped("sent a datagram to %s:%s (the host listener decides)", argv[2], argv[3]);
    }
    if (!strcmp(k, "unix") || !strcmp(k, "abstract")) {
        if (argc != 3) usage("net unix PATH | abstract NAME");
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0) blocked("socket", errno);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        socklen_t len;
        if (!strcmp(k, "abstract")) {
            a.sun_path[0] = 0;
            strncpy(a.sun_path + 1, argv[2], sizeof a.sun_path - 2);
            len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(argv[2]);
        } else {
            strncpy(a.sun_path, argv[2], sizeof a.sun_path - 1);
            len = sizeof a;
        }
        if (connect(s, (void *)&a, len) < 0) blocked("connect", errno);
        if (write(s, "HOSTILE-UNIX\n", 13) < 0) blocked("write", errno);
        escaped("connected to %s socket %s", k, argv[2]);
    }
    if (!strcmp(k, "packet")) {
        int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
        if (s < 0) blocked("socket(AF_PACKET)", errno);
        escaped("AF_PACKET socket %d", s);
    }
    if (!strcmp(k, "netlink")) {
        int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
        if (s < 0) blocked("socket(AF_NETLINK)", errno);
        escaped("AF_NETLINK socket %d", s);
    }
    if (!strcmp(k, "vsock")) {
        int s = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (s < 0) blocked("socket(AF_VSOCK)", errno);
        escaped("AF_VSOCK socket %d", s);
    }
    usage("unknown kind");
}
