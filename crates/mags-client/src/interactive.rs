//! Ways into a live sandbox: SSH access keys (`POST /access`, port 22) and
//! a command on a terminal over the WebSocket `GET /exec/tty` (its frames
//! are documented in `mags_api::ssh` and the server's `routes::tty`).

use crate::{seg, Client, ClientError};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use mags_api::{SshAccessResponse, TtyClientMsg, TtyQuery, TtyServerMsg, SSH_PORT};
use reqwest::{Method, StatusCode};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Something the terminal session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyEvent {
    /// Bytes the terminal shows.
    Output(Vec<u8>),
    /// The command ended; always the last event.
    Exit(i32),
    /// The session failed; always the last event.
    Error(String),
}

/// A command on a terminal in a sandbox; [`TtySession::split`] it to type
/// and read at once.
pub struct TtySession {
    ws: Ws,
}

/// The sending half of a [`TtySession`].
pub struct TtyWriter {
    sink: SplitSink<Ws, Message>,
}

/// The receiving half of a [`TtySession`].
pub struct TtyReader {
    stream: SplitStream<Ws>,
    done: bool,
}

impl Client {
    /// `POST /mags-jobs/{id}/access {"port": 22}`: SSH host, port and a
    /// fresh private key for this sandbox (woken if it sleeps).
    pub async fn ssh_access(&self, id: &str) -> Result<SshAccessResponse, ClientError> {
        let req = self
            .request(Method::POST, &format!("/mags-jobs/{}/access", seg(id)))
            .json(&serde_json::json!({ "port": SSH_PORT }));
        self.json(req).await
    }

    /// Starts `q.command` (or a login shell) on a terminal in sandbox `id`.
    pub async fn tty(&self, id: &str, q: &TtyQuery) -> Result<TtySession, ClientError> {
        let ws_base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            return Err(ClientError::InvalidUrl(self.base.clone()));
        };
        let mut url =
            reqwest::Url::parse(&format!("{ws_base}/api/v1/mags-jobs/{}/exec/tty", seg(id)))
                .map_err(|_| ClientError::InvalidUrl(self.base.clone()))?;
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(c) = &q.command {
                pairs.append_pair("command", c);
            }
            if let Some(r) = q.rows {
                pairs.append_pair("rows", &r.to_string());
            }
            if let Some(c) = q.cols {
                pairs.append_pair("cols", &c.to_string());
            }
            if let Some(t) = &q.term {
                pairs.append_pair("term", t);
            }
        }
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let auth = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| ClientError::Decode("the API token is not a valid header".into()))?;
        req.headers_mut().insert("Authorization", auth);
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(TtySession { ws }),
            Err(tungstenite::Error::Http(resp)) => {
                let status = StatusCode::from_u16(resp.status().as_u16())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = resp.body().as_deref().unwrap_or_default();
                let message = serde_json::from_slice::<mags_api::ErrorBody>(body)
                    .map(|b| b.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string());
                Err(ClientError::Api { status, message })
            }
            Err(e) => Err(ClientError::Decode(format!(
                "cannot open the terminal WebSocket at {}: {e}",
                self.base
            ))),
        }
    }
}

impl TtySession {
    /// Separates typing from reading.
    pub fn split(self) -> (TtyWriter, TtyReader) {
        let (sink, stream) = self.ws.split();
        (
            TtyWriter { sink },
            TtyReader {
                stream,
                done: false,
            },
        )
    }
}

fn ws_err(e: tungstenite::Error) -> ClientError {
    ClientError::Decode(format!("terminal WebSocket: {e}"))
}

impl TtyWriter {
    /// Types `data` into the terminal.
    pub async fn input(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.sink
            .send(Message::Binary(data.to_vec().into()))
            .await
            .map_err(ws_err)
    }

    /// Tells the terminal its new size.
    pub async fn resize(&mut self, rows: u16, cols: u16) -> Result<(), ClientError> {
        let text = serde_json::to_string(&TtyClientMsg::Resize { rows, cols })
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        self.sink
            .send(Message::Text(text.into()))
            .await
            .map_err(ws_err)
    }

    /// Hangs up (the command gets SIGHUP).
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.sink.close().await.map_err(ws_err)
    }
}

impl TtyReader {
    /// The next event; `None` after `Exit` or `Error`.
    pub async fn next(&mut self) -> Option<TtyEvent> {
        if self.done {
            return None;
        }
        loop {
            let ev = match self.stream.next().await {
                Some(Ok(Message::Binary(b))) => TtyEvent::Output(b.to_vec()),
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<TtyServerMsg>(&t) {
                    Ok(TtyServerMsg::Exit { exit_code }) => TtyEvent::Exit(exit_code),
                    Ok(TtyServerMsg::Error { error }) => TtyEvent::Error(error),
                    Err(_) => continue,
                },
                Some(Ok(Message::Close(_))) | None => {
                    TtyEvent::Error("the server closed the terminal without an exit status".into())
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => TtyEvent::Error(format!("terminal WebSocket: {e}")),
            };
            if !matches!(ev, TtyEvent::Output(_)) {
                self.done = true;
            }
            return Some(ev);
        }
    }
}
