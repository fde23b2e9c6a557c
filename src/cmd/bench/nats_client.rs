//! A minimal NATS core client for the benchmark (PUB, SUB with queue groups, MSG,
//! PING/PONG), so actormq can be measured beside nats-server with each broker's own
//! protocol. Only what the benchmark needs.

use std::net::SocketAddr;

use actormq::net::writer::FrameSink;
use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

pub struct NatsWriter {
    sink: FrameSink,
}

pub struct NatsReader {
    read: OwnedReadHalf,
    buf: BytesMut,
    /// PONGs seen (the answers to `flush`).
    pub pongs: u64,
    sink: FrameSink,
}

impl NatsWriter {
    pub fn publish(&self, subject: &str, payload: &[u8]) -> anyhow::Result<()> {
        let mut buf = BytesMut::with_capacity(subject.len() + payload.len() + 32);
        buf.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
        buf.extend_from_slice(payload);
        buf.extend_from_slice(b"\r\n");
        self.sink
            .send(buf.freeze())
            .context("the NATS connection is closed")
    }

    pub fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
        sid: u32,
    ) -> anyhow::Result<()> {
        let line = match queue_group {
            Some(group) => format!("SUB {subject} {group} {sid}\r\n"),
            None => format!("SUB {subject} {sid}\r\n"),
        };
        self.sink
            .send(Bytes::from(line))
            .context("the NATS connection is closed")
    }

    pub fn ping(&self) -> anyhow::Result<()> {
        self.sink
            .send(Bytes::from_static(b"PING\r\n"))
            .context("the NATS connection is closed")
    }
}

/// What the server sent that a caller cares about.
pub enum Event {
    Message(Bytes),
    Pong,
}

impl NatsReader {
    /// The next message payload, skipping PONGs; `None` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            match self.next_event().await? {
                Some(Event::Message(payload)) => return Ok(Some(payload)),
                Some(Event::Pong) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next message or PONG (answering PINGs); `None` at the end.
    pub async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(line_end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..line_end].to_vec();
                if line.starts_with(b"MSG ") {
                    let text = String::from_utf8_lossy(&line);
                    let len: usize = text
                        .split_whitespace()
                        .last()
                        .and_then(|n| n.parse().ok())
                        .context("a MSG line without a length")?;
                    if self.buf.len() < line_end + 2 + len + 2 {
                        self.fill().await?;
                        continue;
                    }
                    self.buf.advance(line_end + 2);
                    let payload = self.buf.split_to(len).freeze();
                    self.buf.advance(2);
                    return Ok(Some(Event::Message(payload)));
                }
                self.buf.advance(line_end + 2);
                match &line[..] {
                    b"PING" => {
                        let _ = self.sink.send(Bytes::from_static(b"PONG\r\n"));
                    }
                    b"PONG" => {
                        self.pongs += 1;
                        return Ok(Some(Event::Pong));
                    }
                    l if l.starts_with(b"-ERR") => {
                        bail!("NATS error: {}", String::from_utf8_lossy(l))
                    }
                    _ => {} // INFO, +OK
                }
                continue;
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Reads until `n` PONGs have been seen in all (messages before them are dropped).
    pub async fn pongs_reach(&mut self, n: u64) -> anyhow::Result<()> {
        while self.pongs < n {
            if self.next_event().await?.is_none() {
                bail!("the connection closed before PONG");
            }
        }
        Ok(())
    }

    async fn fill(&mut self) -> anyhow::Result<bool> {
        self.buf.reserve(64 * 1024);
        Ok(self.read.read_buf(&mut self.buf).await? > 0)
    }
}

pub async fn connect(addr: SocketAddr) -> anyhow::Result<(NatsWriter, NatsReader)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to NATS at {addr}"))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let sink = super::client_writer(write);
    sink.send(Bytes::from_static(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"actormq-bench\"}\r\n",
    ))?;
    let writer = NatsWriter { sink: sink.clone() };
    let reader = NatsReader {
        read,
        buf: BytesMut::new(),
        pongs: 0,
        sink,
    };
    Ok((writer, reader))
}
