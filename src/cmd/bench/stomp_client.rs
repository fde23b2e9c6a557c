//! A small STOMP 1.2 client for the benchmark, built on actormq's own STOMP codec and
//! batching writer, so the same client drives actormq, ActiveMQ and RabbitMQ.

use std::net::SocketAddr;
use std::time::Duration;

use actormq::net::writer::FrameSink;
use actormq::protocol::stomp::{
    Command, Inbound, StompCodec, StompFrame, StompLimits, encode_into,
};
use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::FramedRead;

/// Where and how to log in.
#[derive(Clone, Debug)]
pub struct StompTarget {
    pub addr: SocketAddr,
    pub host: String,
    pub login: String,
    pub passcode: String,
}

pub struct StompWriter {
    sink: FrameSink,
}

pub struct StompReader {
    reader: FramedRead<OwnedReadHalf, StompCodec>,
}

impl StompWriter {
    pub fn send(&self, frame: &StompFrame) -> anyhow::Result<()> {
        let mut buf = BytesMut::with_capacity(128 + frame.body.len());
        encode_into(frame, &mut buf);
        self.send_encoded(buf.freeze())
    }

    /// One frame already encoded (a `FrameWriter`'s).
    pub fn send_encoded(&self, frame: Bytes) -> anyhow::Result<()> {
        self.sink
            .send(frame)
            .context("the STOMP connection is closed")
    }
}

impl StompReader {
    /// The next frame (heart-beats skipped); an ERROR frame is an error.
    pub async fn next(&mut self) -> anyhow::Result<Option<StompFrame>> {
        loop {
            match self.reader.next().await {
                None => return Ok(None),
                Some(Err(e)) => bail!("STOMP read failed: {e}"),
                Some(Ok(Inbound::Heartbeat)) => continue,
                Some(Ok(Inbound::Frame(frame))) if frame.command == Command::Error => {
                    bail!(
                        "the broker sent ERROR: {} {}",
                        frame.get("message").unwrap_or_default(),
                        String::from_utf8_lossy(&frame.body)
                    )
                }
                Some(Ok(Inbound::Frame(frame))) => return Ok(Some(frame)),
            }
        }
    }

    /// Reads until the RECEIPT named `receipt`.
    pub async fn receipt(&mut self, receipt: &str) -> anyhow::Result<()> {
        while let Some(frame) = self.next().await? {
            if frame.command == Command::Receipt && frame.get("receipt-id") == Some(receipt) {
                return Ok(());
            }
        }
        bail!("the connection closed before RECEIPT {receipt}")
    }
}

/// Connects and logs in.
pub async fn connect(target: &StompTarget) -> anyhow::Result<(StompWriter, StompReader)> {
    let stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("cannot connect to STOMP at {}", target.addr))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let sink = super::client_writer(write);
    let limits = StompLimits {
        max_frame_bytes: 64 << 20,
        max_headers: 1000,
        max_header_bytes: 64 << 10,
        max_body_bytes: 64 << 20,
    };
    let writer = StompWriter { sink };
    let mut reader = StompReader {
        reader: FramedRead::new(read, StompCodec::new(limits)),
    };
    writer.send(
        &StompFrame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", target.host.clone())
            .header("login", target.login.clone())
            .header("passcode", target.passcode.clone())
            .header("heart-beat", "0,0"),
    )?;
    match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
        Ok(Ok(Some(frame))) if frame.command == Command::Connected => Ok((writer, reader)),
        Ok(Ok(other)) => bail!("expected CONNECTED, got {other:?}"),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("no CONNECTED from {} within 10 s", target.addr),
    }
}
