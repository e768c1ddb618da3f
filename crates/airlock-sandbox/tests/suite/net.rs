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
