//! A client connection's byte stream as the HTTP server is given it: its
//! first bytes read here, under the header timeout, and replayed to hyper
//! ([`first_bytes`], [`ClientStream::with_prefix`]), and a TCP stream
//! whose close is its only shutdown ([`ClientStream::no_half_close`]).
//!
//! Reading the first bytes before hyper does two things. A client that
//! connects and sends nothing is closed after the header timeout: hyper's
//! own header timeout starts only once the HTTP/1-or-HTTP/2 detection has
//! seen bytes, so such a connection would otherwise be held until the
//! client leaves. And the request usually arrives whole in that one read,
//! which hyper then takes from memory: one `recv` per new connection
//! instead of the detection's 24-byte read followed by hyper's own.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Bytes asked for by the first read: a typical request head fits.
const FIRST_READ: usize = 4096;

/// The connection's first bytes, waiting at most `timeout` for them;
/// `None` when the client closed, failed or sent nothing in that time.
pub async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I, timeout: Duration) -> Option<BytesMut> {
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    match tokio::time::timeout(timeout, io.read_buf(&mut buf)).await {
        Ok(Ok(read)) if read > 0 => Some(buf),
        _ => None,
    }
}

/// A client connection's stream as the server layers use it: bytes
/// already read from it served first ([`ClientStream::with_prefix`]), and,
/// for the TCP stream itself, a shutdown that only flushes
/// ([`ClientStream::no_half_close`]): the connection then ends when the
/// stream is dropped, right after hyper's shutdown, and `close` sends the
/// same FIN (or the same reset, with unread data) that `shutdown(SHUT_WR)`
/// followed by `close` would, one system call fewer per connection. Above
/// it, TLS still sends its close_notify.
#[derive(Debug)]
pub struct ClientStream<I> {
    prefix: Vec<u8>,
    /// How much of `prefix` was served.
    served: usize,
    /// Whether `poll_shutdown` reaches `io`'s.
    forward_shutdown: bool,
    io: I,
}

impl<I> ClientStream<I> {
    /// `io` with `prefix` (bytes already read from it) served first.
    pub fn with_prefix(prefix: Vec<u8>, io: I) -> ClientStream<I> {
        ClientStream {
            prefix,
            served: 0,
            forward_shutdown: true,
            io,
        }
    }

    /// `io` (a TCP stream) whose shutdown only flushes.
    pub fn no_half_close(io: I) -> ClientStream<I> {
        ClientStream {
            prefix: Vec::new(),
            served: 0,
            forward_shutdown: false,
            io,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ClientStream<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.served < this.prefix.len() {
            let count = buf.remaining().min(this.prefix.len() - this.served);
            buf.put_slice(&this.prefix[this.served..this.served + count]);
            this.served += count;
            if this.served == this.prefix.len() {
                // Served: give the memory back for the connection's lifetime.
                this.prefix = Vec::new();
                this.served = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientStream<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.forward_shutdown {
            Pin::new(&mut self.io).poll_shutdown(cx)
        } else {
            // Whatever was written is handed to the kernel already;
            // flushing is all a shutdown owes the caller here.
            Pin::new(&mut self.io).poll_flush(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn prefix_is_served_before_the_stream_in_small_reads_too() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b" and the rest").await.unwrap();
        drop(client);
        let mut io = ClientStream::with_prefix(b"the prefix".to_vec(), server);
        let mut small = [0u8; 4];
        let read = io.read(&mut small).await.unwrap();
        assert_eq!(&small[..read], b"the ");
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"prefix and the rest");
    }

    #[tokio::test]
    async fn first_bytes_waits_for_data_and_gives_up_on_silence_or_close() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let got = first_bytes(&mut server, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"GET / HTTP/1.1\r\n"[..]));

        // Nothing sent: the timeout ends the wait.
        let started = std::time::Instant::now();
        assert_eq!(
            first_bytes(&mut server, Duration::from_millis(100)).await,
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(100));

        // Closed without a byte.
        drop(client);
        assert_eq!(first_bytes(&mut server, Duration::from_secs(5)).await, None);
    }

    #[tokio::test]
    async fn no_half_close_keeps_writing_and_shutdown_only_flushes() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = ClientStream::no_half_close(server);
        io.write_all(b"answer").await.unwrap();
        io.shutdown().await.unwrap();
        // The peer sees no end of stream until the stream is dropped.
        let mut client = client;
        let mut buf = [0u8; 6];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"answer");
        io.write_all(b"!").await.unwrap();
        drop(io);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"!");
    }
}
