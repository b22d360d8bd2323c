//! The encrypted channel: the Noise handshake and the frames after it.
//!
//! Every message on the wire is a frame: a big-endian `u16` length, then that many bytes. The
//! two handshake messages are frames of at most [`MAX_HANDSHAKE_MSG`] bytes; a zero-length
//! frame in place of the responder's message is its refusal (the initiator's first message did
//! not decrypt: another token). After the handshake every frame is one Noise transport message
//! (ciphertext plus a 16-byte tag, at most 65535 bytes); an empty plaintext marks the end of
//! that direction's stream.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use snow::{HandshakeState, StatelessTransportState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::ClusterToken;

/// The Noise protocol: no static keys, both sides authenticated by the pre-shared key alone.
const PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash: a peer speaking another protocol (or another version of
/// this framing) fails the handshake instead of misreading frames.
const PROLOGUE: &[u8] = b"hearth-cluster/1";
/// Noise's authentication tag.
const TAG: usize = 16;
/// NNpsk0's messages are 48 bytes (an ephemeral key and an empty payload's tag); a length
/// prefix above this is not our handshake, and nothing is read or allocated for it.
pub(crate) const MAX_HANDSHAKE_MSG: usize = 128;
/// Noise's largest message.
const MAX_MSG: usize = 65535;
/// The most plaintext one frame carries.
pub(crate) const MAX_PAYLOAD: usize = MAX_MSG - TAG;
/// Buffer for reads from the socket: a few frames, so small frames cost few system calls.
const READ_BUFFER: usize = 4 * MAX_MSG;

/// Why a handshake did not complete.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The connection failed or closed.
    Io(io::Error),
    /// The peer's message did not decrypt (the responder has then sent its refusal), or the
    /// responder refused ours: the two sides hold different tokens.
    WrongKey,
    /// The peer's first bytes are not a handshake message of this protocol (the length, in
    /// the message).
    NotHandshake(usize),
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

fn builder(token: &ClusterToken) -> snow::Builder<'_> {
    let params = PARAMS.parse().expect("a valid Noise pattern name");
    snow::Builder::new(params)
        .prologue(PROLOGUE)
        .and_then(|b| b.psk(0, token.psk()))
        .expect("prologue and psk are accepted before building")
}

/// The controller's side: sends the first message, reads the answer. Also returns the time
/// from sending to the answer, one network round trip plus the responder's key exchange.
pub(crate) async fn initiate<R, W>(
    mut read: R,
    mut write: W,
    token: &ClusterToken,
) -> Result<(SecureReader<R>, SecureWriter<W>, Duration), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut noise = builder(token).build_initiator().map_err(crypto_error)?;
    let mut message = [0u8; 2 + MAX_HANDSHAKE_MSG];
    let n = noise.write_message(&[], &mut message[2..]).map_err(crypto_error)?;
    message[..2].copy_from_slice(&(n as u16).to_be_bytes());
    let sent = Instant::now();
    write.write_all(&message[..2 + n]).await?;
    let answer = read_handshake_message(&mut read, &mut message).await?;
    let rtt = sent.elapsed();
    if answer.is_empty() {
        return Err(HandshakeError::WrongKey);
    }
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    noise.read_message(answer, &mut payload).map_err(|_| HandshakeError::WrongKey)?;
    let (reader, writer) = transport(noise, read, write)?;
    Ok((reader, writer, rtt))
}

/// The worker's side: reads the first message; answers it, or refuses it with an empty frame
/// when it does not decrypt.
pub(crate) async fn respond<R, W>(
    mut read: R,
    mut write: W,
    token: &ClusterToken,
) -> Result<(SecureReader<R>, SecureWriter<W>), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut noise = builder(token).build_responder().map_err(crypto_error)?;
    let mut message = [0u8; 2 + MAX_HANDSHAKE_MSG];
    let first = read_handshake_message(&mut read, &mut message).await?;
    if first.is_empty() {
        return Err(HandshakeError::NotHandshake(0));
    }
    let mut payload = [0u8; MAX_HANDSHAKE_MSG];
    if noise.read_message(first, &mut payload).is_err() {
        // Best effort: the refusal only makes the peer's error message clearer.
        let _ = write.write_all(&[0, 0]).await;
        return Err(HandshakeError::WrongKey);
    }
    let n = noise.write_message(&[], &mut message[2..]).map_err(crypto_error)?;
    message[..2].copy_from_slice(&(n as u16).to_be_bytes());
    write.write_all(&message[..2 + n]).await?;
    transport(noise, read, write)
}

/// Reads one handshake frame into `buf`, refusing a length above [`MAX_HANDSHAKE_MSG`]
/// before reading it.
async fn read_handshake_message<'b, R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &'b mut [u8; 2 + MAX_HANDSHAKE_MSG],
) -> Result<&'b [u8], HandshakeError> {
    let len = read_len(read).await?;
    if len > MAX_HANDSHAKE_MSG {
        return Err(HandshakeError::NotHandshake(len));
    }
    read.read_exact(&mut buf[..len]).await?;
    Ok(&buf[..len])
}

async fn read_len<R: AsyncRead + Unpin>(read: &mut R) -> io::Result<usize> {
    let mut len = [0u8; 2];
    read.read_exact(&mut len).await?;
    Ok(u16::from_be_bytes(len) as usize)
}

fn transport<R: AsyncRead, W>(
    noise: HandshakeState,
    read: R,
    write: W,
) -> Result<(SecureReader<R>, SecureWriter<W>), HandshakeError> {
    // Stateless: each direction keeps its own nonce, so the two halves need no lock.
    let noise = Arc::new(noise.into_stateless_transport_mode().map_err(crypto_error)?);
    // Buffered only now: the handshake reads exact lengths, and an unauthenticated peer gets
    // no buffer beyond the handshake's stack arrays.
    let reader = SecureReader {
        io: BufReader::with_capacity(READ_BUFFER, read),
        noise: noise.clone(),
        nonce: 0,
        cipher: vec![0; MAX_MSG].into_boxed_slice(),
        plain: vec![0; MAX_MSG].into_boxed_slice(),
    };
    let writer = SecureWriter { io: write, noise, nonce: 0, buf: Vec::new() };
    Ok((reader, writer))
}

fn crypto_error(e: snow::Error) -> HandshakeError {
    HandshakeError::Io(io::Error::other(format!("noise: {e}")))
}

/// One frame's plaintext.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    Data(&'a [u8]),
    /// The peer sends nothing more in this direction.
    End,
}

/// The receiving half of an established channel.
pub(crate) struct SecureReader<R> {
    /// The socket, buffered: frames are read as a 2-byte length and a body.
    io: BufReader<R>,
    /// Keys of both directions (this half uses the receiving one).
    noise: Arc<StatelessTransportState>,
    /// The next frame's nonce: frames must arrive in order, exactly once.
    nonce: u64,
    /// The frame as received.
    cipher: Box<[u8]>,
    /// The frame decrypted; [`Frame::Data`] borrows it.
    plain: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> SecureReader<R> {
    /// The next frame. A connection that closes without [`Frame::End`] is an
    /// `UnexpectedEof` error; a frame that fails authentication is `InvalidData`.
    pub(crate) async fn recv(&mut self) -> io::Result<Frame<'_>> {
        let len = read_len(&mut self.io).await?;
        if len < TAG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {len}-byte frame is shorter than its tag"),
            ));
        }
        self.io.read_exact(&mut self.cipher[..len]).await?;
        let n = self.noise.read_message(self.nonce, &self.cipher[..len], &mut self.plain).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "a frame failed authentication (corrupted or forged)")
        })?;
        self.nonce += 1;
        Ok(if n == 0 { Frame::End } else { Frame::Data(&self.plain[..n]) })
    }

    /// The next frame as one JSON message.
    pub(crate) async fn recv_json<T: DeserializeOwned>(&mut self) -> io::Result<T> {
        match self.recv().await? {
            Frame::Data(data) => {
                serde_json::from_slice(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            }
            Frame::End => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// The sending half of an established channel.
pub(crate) struct SecureWriter<W> {
    /// The socket; whole frames are assembled in `buf` first, so it needs no buffering.
    io: W,
    /// Keys of both directions (this half uses the sending one).
    noise: Arc<StatelessTransportState>,
    /// The next frame's nonce.
    nonce: u64,
    /// Frames being assembled for one write.
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> SecureWriter<W> {
    /// Sends `data` (nothing when empty) as frames of at most [`MAX_PAYLOAD`] bytes, in one
    /// write.
    pub(crate) async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.buf.clear();
        for chunk in data.chunks(MAX_PAYLOAD) {
            self.seal(chunk)?;
        }
        self.io.write_all(&self.buf).await
    }

    /// Sends the end of this direction's stream.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.seal(&[])?;
        self.io.write_all(&self.buf).await
    }

    /// Sends one JSON message, which must fit one frame.
    pub(crate) async fn send_json<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        if bytes.len() > MAX_PAYLOAD {
            let detail = format!("a {}-byte message exceeds the {MAX_PAYLOAD}-byte limit", bytes.len());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, detail));
        }
        self.send(&bytes).await
    }

    fn seal(&mut self, chunk: &[u8]) -> io::Result<()> {
        let start = self.buf.len();
        self.buf.resize(start + 2 + chunk.len() + TAG, 0);
        let n = self
            .noise
            .write_message(self.nonce, chunk, &mut self.buf[start + 2..])
            .map_err(|e| io::Error::other(format!("noise: {e}")))?;
        self.buf[start..start + 2].copy_from_slice(&(n as u16).to_be_bytes());
        self.nonce += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, split, DuplexStream, ReadHalf, WriteHalf};

    type Pair = (SecureReader<ReadHalf<DuplexStream>>, SecureWriter<WriteHalf<DuplexStream>>);

    async fn handshake(
        a: &ClusterToken,
        b: &ClusterToken,
    ) -> (Result<Pair, HandshakeError>, Result<Pair, HandshakeError>) {
        let (left, right) = duplex(1 << 20);
        let (lr, lw) = split(left);
        let (rr, rw) = split(right);
        let (client, server) = tokio::join!(initiate(lr, lw, a), respond(rr, rw, b));
        (client.map(|(r, w, _)| (r, w)), server)
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let token = ClusterToken::new("t");
        let (client, server) = handshake(&token, &token).await;
        let ((_, mut tx), (mut rx, _)) = (client.unwrap(), server.unwrap());
        let big: Vec<u8> = (0..3 * MAX_PAYLOAD + 7).map(|i| (i % 251) as u8).collect();
        for len in [1, MAX_PAYLOAD, MAX_PAYLOAD + 1, big.len()] {
            let (sent, received) = tokio::join!(tx.send(&big[..len]), async {
                let mut got = Vec::new();
                while got.len() < len {
                    match rx.recv().await.unwrap() {
                        Frame::Data(d) => got.extend_from_slice(d),
                        Frame::End => panic!("unexpected end"),
                    }
                }
                got
            });
            sent.unwrap();
            assert_eq!(received, &big[..len]);
        }
        tx.send(&[]).await.unwrap(); // sends nothing
        tx.finish().await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Frame::End);
    }

    #[tokio::test]
    async fn wrong_token_is_refused_on_both_sides() {
        let (client, server) = handshake(&ClusterToken::new("a"), &ClusterToken::new("b")).await;
        assert!(matches!(client, Err(HandshakeError::WrongKey)), "{:?}", client.err());
        assert!(matches!(server, Err(HandshakeError::WrongKey)), "{:?}", server.err());
        let (client, server) = handshake(&ClusterToken::none(), &ClusterToken::new("b")).await;
        assert!(matches!(client, Err(HandshakeError::WrongKey)));
        assert!(matches!(server, Err(HandshakeError::WrongKey)));
    }

    #[tokio::test]
    async fn oversized_handshake_length_is_not_read() {
        let (mut left, right) = duplex(1024);
        let (rr, rw) = split(right);
        // A ggml RPC hello: command 14, then a little-endian u64 size.
        left.write_all(&[14, 1, 0, 0, 0, 0, 0, 0, 0]).await.unwrap();
        let server = respond(rr, rw, &ClusterToken::none()).await;
        assert!(matches!(server, Err(HandshakeError::NotHandshake(0x0e01))), "{:?}", server.err());
    }

    #[tokio::test]
    async fn tampered_frame_fails_authentication() {
        let token = ClusterToken::none();
        let (client_end, relay_near) = duplex(1 << 16);
        let (relay_far, server_end) = duplex(1 << 16);
        let (mut near_read, mut near_write) = split(relay_near);
        let (mut far_read, mut far_write) = split(relay_far);
        // A man in the middle that flips one bit of the first transport frame's ciphertext
        // (after the 50-byte handshake message and the frame's 2-byte length).
        let upstream = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = 0usize;
            loop {
                let n = near_read.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                if (seen..seen + n).contains(&55) {
                    buf[55 - seen] ^= 1;
                }
                seen += n;
                far_write.write_all(&buf[..n]).await.unwrap();
            }
        });
        let downstream = tokio::spawn(async move { tokio::io::copy(&mut far_read, &mut near_write).await });
        let (cr, cw) = split(client_end);
        let (sr, sw) = split(server_end);
        let (client, server) = tokio::join!(initiate(cr, cw, &token), respond(sr, sw, &token));
        let (_, mut tx, _) = client.unwrap();
        let (mut rx, _) = server.unwrap();
        tx.send(b"hello").await.unwrap();
        let err = rx.recv().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        upstream.abort();
        downstream.abort();
    }
}
