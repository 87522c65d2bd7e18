//! Tunnels over `mags-agent --stdio`, driven by the host's real client
//! (`AgentConn::open_tunnel`): bytes both ways well past the flow-control
//! window, half-close, and a refused port. Outside a VM the agent's
//! `127.0.0.1` is the host's, so an echo server here stands in for a
//! server in the guest.

mod common;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn bytes_flow_both_ways_past_the_window_and_half_close_works() {
    let (conn, _child) = common::agent(Duration::from_secs(10)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Echo until EOF, then say goodbye and close.
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.expect("echo");
        w.write_all(b"bye").await.expect("bye");
    });
    let tunnel = conn.open_tunnel(port).await.expect("tunnel");
    let (mut rd, mut wr) = tokio::io::split(tunnel);
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.expect("write");
        wr.shutdown().await.expect("half-close");
        wr
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut back))
        .await
        .expect("in time")
        .expect("read");
    let _wr = writer.await.expect("writer");
    assert_eq!(back.len(), data.len() + 3);
    assert!(back[..data.len()] == data[..], "echoed intact");
    assert_eq!(&back[data.len()..], b"bye");
}

#[tokio::test]
async fn a_closed_port_is_a_clear_error() {
    let (conn, _child) = common::agent(Duration::from_secs(10)).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = conn.open_tunnel(port).await.err().expect("refused");
    assert!(err.to_string().contains(&format!("port {port}")), "{err}");
    // The connection is still good for more.
    conn.info().await.expect("info after a refused tunnel");
}
