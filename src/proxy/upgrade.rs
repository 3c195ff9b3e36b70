//! The WebSocket relay: bytes copied both ways between the upgraded browser and upstream
//! connections, closed with `1008` when the session behind it ends and with `1001` when
//! Sallyport shuts down.
//!
//! The relay stays raw — no frame is decoded, so subprotocols, extensions and
//! `permessage-deflate` pass untouched — but it follows frame *boundaries* (RFC 6455 §5.2:
//! header, extended length, mask, payload). That is all a clean close needs: when the session
//! ends (or the server stops), each direction finishes the frame it is in, then the browser
//! gets a Close frame (unmasked) and the upstream a masked one, and both connections shut. A
//! WebSocket crate would decode every frame and, as tungstenite does, give up
//! `permessage-deflate`; the boundary tracker is about forty lines and parses only lengths.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::guard::SessionGuard;

/// How long a direction may take to finish the frame it is in once the relay must stop.
const FINISH_FRAME: Duration = Duration::from_secs(2);

/// Why a relay stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The session behind it ended: RFC 6455 §7.4.1 `1008`, policy violation.
    SessionEnded,
    /// Sallyport is shutting down: `1001`, going away (the browser may reconnect elsewhere).
    GoingAway,
}

impl Close {
    fn code(self) -> u16 {
        match self {
            Close::SessionEnded => 1008,
            Close::GoingAway => 1001,
        }
    }

    fn reason(self) -> &'static [u8] {
        match self {
            Close::SessionEnded => b"session ended",
            Close::GoingAway => b"server shutting down",
        }
    }
}

/// The open relays, so that a graceful shutdown can close them and wait for them as it does
/// for HTTP requests.
#[derive(Debug, Clone)]
pub struct Relays {
    /// `true` once shutting down; every live relay holds a receiver.
    stop: watch::Sender<bool>,
}

impl Default for Relays {
    fn default() -> Self {
        Self {
            stop: watch::Sender::new(false),
        }
    }
}

impl Relays {
    /// Tells every relay, and every relay still to start, to close with `1001`.
    pub fn shut_down(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until every relay has ended, at most `grace`; `false` if some were still open.
    pub async fn drained(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.stop.closed())
            .await
            .is_ok()
    }

    /// Relays the upgraded connections, ending the relay when `guard`'s session ends or
    /// Sallyport shuts down.
    pub(crate) fn relay(
        &self,
        client: OnUpgrade,
        upstream: OnUpgrade,
        guard: Option<SessionGuard>,
    ) {
        let shutdown = self.stop.subscribe();
        tokio::spawn(relay(client, upstream, guard, shutdown));
    }
}

async fn relay(
    client: OnUpgrade,
    upstream: OnUpgrade,
    guard: Option<SessionGuard>,
    shutdown: watch::Receiver<bool>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return;
        }
    };
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut upstream_read, mut upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let (stop_tx, stop) = watch::channel(None);
    // This relay counts as open for `Relays::drained` while `shutdown` lives, which is until
    // the relay ends.
    let mut live = shutdown.clone();
    let why = async move {
        let ended = async {
            match guard {
                Some(guard) => guard.ended().await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            () = ended => Close::SessionEnded,
            _ = live.wait_for(|stopping| *stopping) => Close::GoingAway,
        };
        let _ = stop_tx.send(Some(why));
        // Keep the sender: a dropped one would read as a stop without a reason.
        std::future::pending::<std::convert::Infallible>().await
    };
    // Each direction runs until its sender closes (passing the close on, as
    // `copy_bidirectional` does) or, once the relay must stop, to its next frame boundary; a
    // peer gets the Close frame only at a boundary of what it receives.
    let pumps = async {
        tokio::join!(
            pump(&mut upstream_read, &mut client_write, stop.clone()),
            pump(&mut client_read, &mut upstream_write, stop.clone()),
        )
    };
    let (down, up) = tokio::select! {
        pumped = pumps => pumped,
        never = why => match never {},
    };
    let why = *stop.borrow();
    if let Some(why) = why {
        tracing::info!(code = why.code(), "websocket closed by Sallyport");
        if down.is_stopped() {
            let _ = client_write.write_all(&close_frame(why, None)).await;
        }
        if up.is_stopped() {
            let _ = upstream_write
                .write_all(&close_frame(why, Some(mask())))
                .await;
        }
    }
    let _ = client_write.shutdown().await;
    let _ = upstream_write.shutdown().await;
    drop(shutdown);
}

/// How a direction ended.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// The sender closed its side, a read or write failed, or the frame in flight did not
    /// end in time after the session ended.
    Closed,
    /// The session ended and the direction stopped at a frame boundary.
    Stopped,
}

impl Pumped {
    fn is_stopped(&self) -> bool {
        *self == Pumped::Stopped
    }
}

/// Copies `from` to `to`, tracking frame boundaries, and shuts `to` down when `from` ends;
/// once `stop` has a reason, copies only up to the end of the current frame (within
/// [`FINISH_FRAME`]) and returns.
async fn pump<R, W>(from: &mut R, to: &mut W, mut stop: watch::Receiver<Option<Close>>) -> Pumped
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = Frames::default();
    let mut buf = vec![0u8; 8 * 1024];
    let mut deadline = None;
    loop {
        if deadline.is_some() && frames.at_boundary() {
            return Pumped::Stopped;
        }
        let finish = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return Pumped::Closed;
                }
                Ok(n) => n,
            },
            changed = stop.changed(), if deadline.is_none() => {
                if changed.is_err() || stop.borrow().is_some() {
                    deadline = Some(tokio::time::Instant::now() + FINISH_FRAME);
                }
                continue;
            }
            () = finish => return Pumped::Closed,
        };
        let take = frames.advance(&buf[..n], deadline.is_some());
        if to.write_all(&buf[..take]).await.is_err() {
            return Pumped::Closed;
        }
    }
}

/// Where a byte stream of WebSocket frames stands (RFC 6455 §5.2).
#[derive(Debug, Default)]
struct Frames {
    /// Header bytes of the current frame seen so far (at most 14).
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// The header's full length once its first two bytes are known.
    fn header_len(&self) -> usize {
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().expect("eight bytes")),
            n => u64::from(n),
        }
    }

    /// Follows `data`; returns how many of its bytes to pass on: all of them, or — with
    /// `to_boundary` — only those up to the end of the current frame.
    fn advance(&mut self, data: &[u8], to_boundary: bool) -> usize {
        let mut i = 0;
        while i < data.len() {
            if to_boundary && self.at_boundary() {
                return i;
            }
            if self.payload_left > 0 {
                let take = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                i += take;
                self.payload_left -= take as u64;
                continue;
            }
            self.header[self.have] = data[i];
            self.have += 1;
            i += 1;
            if self.have >= 2 && self.have == self.header_len() {
                self.payload_left = self.payload_len();
                self.have = 0;
            }
        }
        i
    }
}

/// A Close frame for `why`: unmasked for the browser, masked with `mask` for the upstream
/// (RFC 6455 §5.3: frames from a client are masked).
fn close_frame(why: Close, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = why.code().to_be_bytes().to_vec();
    payload.extend_from_slice(why.reason());
    let len = u8::try_from(payload.len()).expect("a short reason");
    let mut frame = vec![0x88];
    match mask {
        None => {
            frame.push(len);
            frame.extend_from_slice(&payload);
        }
        Some(key) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
    frame
}

fn mask() -> [u8; 4] {
    let mut key = [0u8; 4];
    crate::random::fill(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload_len: usize, masked: bool) -> Vec<u8> {
        let mut f = vec![0x81];
        let m = if masked { 0x80 } else { 0 };
        match payload_len {
            0..=125 => f.push(m | payload_len as u8),
            126..=65535 => {
                f.push(m | 126);
                f.extend_from_slice(&(payload_len as u16).to_be_bytes());
            }
            _ => {
                f.push(m | 127);
                f.extend_from_slice(&(payload_len as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', payload_len));
        f
    }

    /// The positions of frame ends in `stream`, fed in pieces of `chunk` bytes, stopping at
    /// each boundary and stepping past it as the relay would go on.
    fn boundaries(stream: &[u8], chunk: usize) -> Vec<usize> {
        let mut frames = Frames::default();
        let (mut seen, mut pos) = (Vec::new(), 0);
        for piece in stream.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = match frames.advance(rest, true) {
                    0 => frames.advance(&rest[..1], false),
                    n => n,
                };
                pos += n;
                rest = &rest[n..];
                if frames.at_boundary() {
                    seen.push(pos);
                }
            }
        }
        seen
    }

    #[test]
    fn boundaries_are_found_across_every_length_form_and_split() {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (len, masked) in [
            (0, false),
            (5, true),
            (125, false),
            (126, true),
            (70_000, false),
        ] {
            stream.extend(frame(len, masked));
            ends.push(stream.len());
        }
        for chunk in [1, 3, 7, 1000, stream.len()] {
            assert_eq!(boundaries(&stream, chunk), ends, "chunks of {chunk}");
        }
    }

    #[test]
    fn stopping_passes_the_rest_of_the_current_frame_only() {
        let mut frames = Frames::default();
        let first = frame(10, false);
        assert_eq!(frames.advance(&first[..4], false), 4);
        let mut rest = first[4..].to_vec();
        rest.extend(frame(3, false));
        assert_eq!(frames.advance(&rest, true), first.len() - 4);
        assert!(frames.at_boundary());
        assert_eq!(
            frames.advance(&frame(3, false), true),
            0,
            "nothing of the next frame"
        );
    }

    #[test]
    fn close_frames_carry_1008_and_are_masked_for_the_upstream() {
        let plain = close_frame(Close::SessionEnded, None);
        assert_eq!(&plain[..4], &[0x88, 15, 0x03, 0xF0]);
        assert_eq!(&plain[4..], b"session ended");
        let going = close_frame(Close::GoingAway, None);
        assert_eq!(&going[..4], &[0x88, 22, 0x03, 0xE9]);
        let masked = close_frame(Close::SessionEnded, Some([9, 8, 7, 6]));
        assert_eq!(masked[1], 0x80 | 15);
        let unmasked: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [9, 8, 7, 6][i % 4])
            .collect();
        assert_eq!(unmasked, plain[2..]);
    }
}
