//! Forwarding between a plain socket (llama.cpp's, or the ggml RPC server's) and the
//! encrypted channel, both ways, on both sides.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::noise::{Frame, SecureReader, SecureWriter, MAX_PAYLOAD};

/// Sees the plaintext bytes as they pass.
pub(crate) trait Observer: Sync {
    /// `n` bytes read from the plain socket, called before they are sent on.
    fn outgoing(&self, n: usize);
    /// `n` bytes received from the channel, called before they are written to the plain socket.
    fn incoming(&self, n: usize);
}

/// Which socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Plain,
    Channel,
}

/// Forwards until both directions have ended; the first error on either socket ends both
/// (the sockets are dropped, so each peer sees its connection close). An end of the plain
/// socket's input is passed on as the channel's end marker and vice versa (half-close).
pub(crate) async fn pump<R, W>(
    plain: &mut TcpStream,
    mut reader: SecureReader<R>,
    mut writer: SecureWriter<W>,
    observer: &dyn Observer,
) -> Result<(), (Side, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut plain_read, mut plain_write) = plain.split();
    let outgoing = async {
        // Several frames' worth: bulk transfers are sealed and written in few system calls,
        // while a small message is still sent as soon as it is read.
        let mut buf = vec![0u8; 4 * MAX_PAYLOAD];
        loop {
            let n = plain_read.read(&mut buf).await.map_err(|e| (Side::Plain, e))?;
            if n == 0 {
                return writer.finish().await.map_err(|e| (Side::Channel, e));
            }
            observer.outgoing(n);
            writer.send(&buf[..n]).await.map_err(|e| (Side::Channel, e))?;
        }
    };
    let incoming = async {
        loop {
            match reader.recv().await.map_err(|e| (Side::Channel, e))? {
                Frame::Data(data) => {
                    observer.incoming(data.len());
                    plain_write.write_all(data).await.map_err(|e| (Side::Plain, e))?;
                }
                Frame::End => return plain_write.shutdown().await.map_err(|e| (Side::Plain, e)),
            }
        }
    };
    tokio::try_join!(outgoing, incoming).map(|_| ())
}
