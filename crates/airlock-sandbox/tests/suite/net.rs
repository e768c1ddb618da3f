use std::net::{TcpListener, UdpSocket};

use crate::common::*;

sandbox_test! {
    fn no_network_without_a_grant() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_nonblocking(true).unwrap();
        let (tp, up) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
        let f = Fixture::new();
        let script = format!(
            "python3 -c \"
import socket
s = socket.socket()
try:
    s.connect(('127.0.0.1', {tp})); print('tcp-connected')
except OSError as e:
    print('tcp-refused')
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b'x', ('127.0.0.1', {up}))
\"; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"
        );
        let Some(o) = try_run(&f.sh(&script)) else { return };
        let out = stdout(&o);
        assert!(out.contains("tcp-refused"), "{out}");
        // Only loopback exists inside.
        let ifs: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(ifs, vec!["lo"], "{out}");
        assert!(tcp.accept().is_err(), "the host TCP listener was reached");
        let mut b = [0u8; 4];
        assert!(udp.recv(&mut b).is_err(), "the host UDP listener got a datagram");
        assert_eq!(o.report.network, "none");
        assert!(o.report.namespaces.contains(&"net".to_string()));
    }
}

sandbox_test! {
    fn udp_is_refused_even_with_a_grant() {
        // Landlock cannot restrict UDP, so a granted sandbox gets TCP only.
        let f = Fixture::new();
        let mut s = f.sh("python3 -c \"
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM); print('udp-ok')
except OSError as e:
    print('udp-refused', e.errno)
\"");
        s.allow_net = vec!["127.0.0.1:9".into()];
        let Some(o) = try_run(&s) else { return };
        assert!(stdout(&o).contains("udp-refused 1"), "{}{}", stdout(&o), stderr(&o));
    }
}

sandbox_test! {
    fn refused_connections_are_reported() {
        // TEST-NET addresses: nothing answers there, and without a grant
        // the sandbox has no route to them anyway.
        let f = Fixture::new();
        let Some(o) = try_run(&f.sh("python3 -c \"
import socket
for a in [('192.0.2.7', 22), ('192.0.2.7', 22), ('127.0.0.1', 9)]:
    try:
        socket.create_connection(a, timeout=1)
    except OSError as e:
        print(a, e.errno)
\"")) else { return };
        assert!(stdout(&o).contains("('192.0.2.7', 22) 101"), "{}", stdout(&o));
        if !o.report.seccomp_notify {
            eprintln!("SKIPPED: [{}] seccomp user notification unavailable: refused connections are not reported", who());
            return;
        }
        let net: Vec<(&str, u32)> =
            o.violations.iter().filter(|v| v.kind == "network").map(|v| (v.what.as_str(), v.count)).collect();
        // The sandbox's own loopback is not a violation.
        assert_eq!(net, vec![("connect 192.0.2.7:22", 2)], "{:?}", o.violations);
    }
}
