//! The host end of a TCP tunnel to a port in the guest
//! ([`HostMsg::Connect`]): [`AgentConn::open_tunnel`] gives a
//! [`TunnelStream`], an ordinary `AsyncRead + AsyncWrite` the URL proxy
//! hands to hyper.
//!
//! Behind it a task moves bytes between an in-memory pipe and the agent
//! stream: what the caller writes goes out as `Input` frames, never more
//! than [`TUNNEL_WINDOW`] bytes ahead of the guest's `TunnelAck`s; the
//! guest's `Stdout` frames are written to the pipe and acknowledged once
//! written, so a slow reader here holds the guest's sender back. Shutting
//! down the write side half-closes the guest socket; dropping the stream
//! tears the tunnel down.

use crate::agent::{AgentConn, StreamHandle};
use crate::VmError;
use mags_proto::{FrameKind, GuestMsg, HostMsg, TUNNEL_WINDOW};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{mpsc, Semaphore};

/// Largest `Input` frame a tunnel sends, and the in-memory pipe's size.
const CHUNK: usize = 64 * 1024;

/// A byte stream to a port in the guest; see the module docs.
pub struct TunnelStream {
    io: DuplexStream,
    _close: CloseOnDrop,
}

struct CloseOnDrop {
    conn: AgentConn,
    stream: u32,
    pump: tokio::task::AbortHandle,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.pump.abort();
        let (conn, stream) = (self.conn.clone(), self.stream);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = conn.send_msg(stream, &HostMsg::TunnelClose).await;
            });
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl AgentConn {
    /// Connects to `127.0.0.1:port` inside the guest. Fails with
    /// [`VmError::Guest`] if nothing listens there.
    pub async fn open_tunnel(&self, port: u16) -> Result<TunnelStream, VmError> {
        let mut s = self.open();
        self.send_msg(s.id, &HostMsg::Connect { port }).await?;
        match s.reply().await? {
            GuestMsg::Ok => {}
            GuestMsg::Error { message } => return Err(VmError::Guest(message)),
            other => return Err(VmError::Protocol(format!("unexpected {other:?}"))),
        }
        let (user, ours) = tokio::io::duplex(CHUNK);
        let stream = s.id;
        let pump = tokio::spawn(pump(s, ours)).abort_handle();
        Ok(TunnelStream {
            io: user,
            _close: CloseOnDrop {
                conn: self.clone(),
                stream,
                pump,
            },
        })
    }
}

/// Moves bytes until both directions are finished or the tunnel breaks.
async fn pump(mut s: StreamHandle, ours: DuplexStream) {
    let conn = s.conn.clone();
    let id = s.id;
    let (mut rd, mut wr) = tokio::io::split(ours);
    let credit = Arc::new(Semaphore::new(TUNNEL_WINDOW as usize));
    let (data_tx, mut data_rx) = mpsc::unbounded_channel::<Vec<u8>>();

    // Caller -> guest, within the window.
    let up = {
        let (conn, credit) = (conn.clone(), credit.clone());
        async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                match credit.acquire_many(n as u32).await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
                if conn.send(FrameKind::Input, id, &buf[..n]).await.is_err() {
                    return;
                }
            }
            let _ = conn.send_msg(id, &HostMsg::CloseInput).await;
        }
    };
    // Guest -> caller; acknowledged once handed on.
    let down = {
        let conn = conn.clone();
        async move {
            while let Some(data) = data_rx.recv().await {
                if wr.write_all(&data).await.is_err() {
                    return;
                }
                let bytes = data.len() as u64;
                if conn
                    .send_msg(id, &HostMsg::TunnelAck { bytes })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        }
    };
    // Frames from the guest: data for `down`, acks for `up`.
    let demux = async move {
        let mut data_tx = Some(data_tx);
        loop {
            let Ok(f) = s.recv().await else { break };
            match f.kind {
                FrameKind::Stdout => {
                    if let Some(tx) = &data_tx {
                        let _ = tx.send(f.payload);
                    }
                    continue;
                }
                FrameKind::Control => {}
                _ => continue,
            }
            match f.parse::<GuestMsg>() {
                Ok(GuestMsg::TunnelAck { bytes }) => {
                    credit.add_permits(
                        usize::try_from(bytes)
                            .unwrap_or(usize::MAX)
                            .min(TUNNEL_WINDOW as usize),
                    );
                }
                Ok(GuestMsg::TunnelEof) => data_tx = None,
                Ok(GuestMsg::Error { message }) => {
                    tracing::debug!(stream = id, "tunnel broke in the guest: {message}");
                    break;
                }
                _ => {}
            }
        }
        // Broken or disconnected: wake both directions so they end.
        credit.close();
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = demux => {}
    }
}
