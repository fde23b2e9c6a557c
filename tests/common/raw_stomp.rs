//! A STOMP client written against actormq's frame codec alone, for tests that speak raw
//! STOMP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use actormq::protocol::stomp::{
    Command, Inbound, StompCodec, StompFrame, StompLimits, encode_into,
};
use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

const WAIT: Duration = Duration::from_secs(10);

/// A STOMP codec with room for anything the broker may send.
pub fn codec() -> StompCodec {
    StompCodec::new(StompLimits {
        max_frame_bytes: 1 << 25,
        max_headers: 1000,
        max_header_bytes: 1 << 16,
        max_body_bytes: 1 << 25,
    })
}

/// A STOMP client written against the frame codec alone.
pub struct RawStomp {
    pub reader: FramedRead<OwnedReadHalf, StompCodec>,
    pub writer: OwnedWriteHalf,
}

impl RawStomp {
    pub async fn open(addr: SocketAddr) -> RawStomp {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        RawStomp {
            reader: FramedRead::new(read, codec()),
            writer,
        }
    }

    /// Opens and completes CONNECT/CONNECTED.
    pub async fn connected(addr: SocketAddr) -> RawStomp {
        let mut client = RawStomp::open(addr).await;
        let connect = StompFrame::new(Command::Connect)
            .header("accept-version", "1.0,1.1,1.2")
            .header("host", "localhost");
        client.send(&connect).await;
        let connected = client.next().await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        assert_eq!(connected.get("version"), Some("1.2"));
        client
    }

    pub async fn send(&mut self, frame: &StompFrame) {
        let mut buf = BytesMut::new();
        encode_into(frame, &mut buf);
        self.raw(&buf).await;
    }

    pub async fn raw(&mut self, bytes: &[u8]) {
        // The broker may already have closed on earlier bad bytes.
        let _ = self.writer.write_all(bytes).await;
    }

    /// The next frame, skipping heart-beats.
    pub async fn next(&mut self) -> StompFrame {
        loop {
            let item = tokio::time::timeout(WAIT, self.reader.next())
                .await
                .expect("a frame in time")
                .expect("the connection is open")
                .expect("a well-formed frame");
            if let Inbound::Frame(frame) = item {
                return frame;
            }
        }
    }

    /// The ERROR the broker answers with; checks that it then closes the connection.
    pub async fn error(&mut self) -> String {
        let frame = self.next().await;
        assert_eq!(frame.command, Command::Error, "{frame:?}");
        let message = frame.get("message").unwrap_or_default().to_string();
        let rest = tokio::time::timeout(WAIT, async {
            loop {
                match self.reader.next().await {
                    Some(Ok(Inbound::Heartbeat)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("closed in time");
        assert!(
            rest.is_none(),
            "the connection closes after ERROR: {rest:?}"
        );
        message
    }
}
