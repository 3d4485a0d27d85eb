//! The `shell` verb's byte stream on host.sock (*ours*).
//!
//! A client asks for a shell in an agent's container with one request line,
//!
//! ```text
//! {"cmd":"shell","name":"alice","rows":24,"cols":80,"term":"xterm-256color"}
//! ```
//!
//! (`rows`, `cols` and `term` optional: 24, 80, `xterm-256color`). A refusal
//! (unknown agent, agent not running) is the usual one line. A bare success
//! `{"version":1,"ok":true}` means the shell runs: from the next byte on, the
//! connection carries frames in both directions instead of JSON lines.
//!
//! ```text
//! frame   = kind:u8  len:u32 big-endian  payload:len bytes      (len ≤ 65536)
//!
//! kind  direction         payload
//! 0x00  both              data: bytes typed into the PTY / bytes the PTY printed
//! 0x01  client → daemon   resize: rows:u16 BE, cols:u16 BE (the shell gets SIGWINCH)
//! 0x02  daemon → client   exit: the shell's exit code, i32 BE (128+N when signal N
//!                         killed it); the last frame, then the daemon closes
//! 0x03  daemon → client   closed: a UTF-8 sentence saying why the daemon ended the
//!                         shell (e.g. it is stopping); the last frame
//! ```
//!
//! The shell runs as uid 0 of the agent's user namespace, in `/state`, with
//! the PTY as its controlling terminal. When the client closes the connection
//! (or sends a frame it does not understand) the daemon ends the shell and
//! every process of its session. The stream has no idle timeout.

/// Bytes of a frame's header: kind and length.
pub const HEADER_BYTES: usize = 5;
/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Terminal size used when a request gives none.
pub const DEFAULT_ROWS: u16 = 24;
/// Terminal size used when a request gives none.
pub const DEFAULT_COLS: u16 = 80;
/// `TERM` used when a request gives none (or an unusable one).
pub const DEFAULT_TERM: &str = "xterm-256color";

const DATA: u8 = 0x00;
const RESIZE: u8 = 0x01;
const EXIT: u8 = 0x02;
const CLOSED: u8 = 0x03;

/// One frame of the shell stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes for the PTY (client → daemon) or from it (daemon → client).
    Data(Vec<u8>),
    /// The client's terminal changed size.
    Resize { rows: u16, cols: u16 },
    /// The shell exited with this code; nothing follows.
    Exit(i32),
    /// The daemon ended the shell for this reason; nothing follows.
    Closed(String),
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a shell frame of {0} bytes is over the 65536-byte limit")]
    TooLong(usize),
    #[error("unknown shell frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("a shell frame of kind {kind:#04x} cannot carry {len} bytes")]
    BadLength { kind: u8, len: usize },
}

impl Frame {
    /// The frame as bytes: header, then payload.
    ///
    /// Data longer than [`MAX_PAYLOAD`] must be split first (see [`Frame::data`]).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Self::Data(bytes) => (DATA, bytes.as_slice().into()),
            Self::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (RESIZE, p.into())
            }
            Self::Exit(code) => (EXIT, code.to_be_bytes().to_vec().into()),
            Self::Closed(why) => (CLOSED, why.as_bytes().into()),
        };
        debug_assert!(payload.len() <= MAX_PAYLOAD, "split data before encoding");
        let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Data frames of at most [`MAX_PAYLOAD`] bytes each, encoded back to back.
    pub fn data(bytes: &[u8]) -> Vec<u8> {
        bytes
            .chunks(MAX_PAYLOAD)
            .flat_map(|c| Self::Data(c.to_vec()).encode())
            .collect()
    }

    /// Reads a header: the kind and how many payload bytes follow.
    pub fn header(header: [u8; HEADER_BYTES]) -> Result<(u8, usize), FrameError> {
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        Ok((header[0], len))
    }

    /// The frame a header's kind and its payload make.
    pub fn from_parts(kind: u8, payload: Vec<u8>) -> Result<Self, FrameError> {
        let bad = || FrameError::BadLength {
            kind,
            len: payload.len(),
        };
        Ok(match kind {
            DATA => Self::Data(payload),
            RESIZE => {
                let p: [u8; 4] = payload.as_slice().try_into().map_err(|_| bad())?;
                Self::Resize {
                    rows: u16::from_be_bytes([p[0], p[1]]),
                    cols: u16::from_be_bytes([p[2], p[3]]),
                }
            }
            EXIT => {
                let p: [u8; 4] = payload.as_slice().try_into().map_err(|_| bad())?;
                Self::Exit(i32::from_be_bytes(p))
            }
            CLOSED => Self::Closed(String::from_utf8_lossy(&payload).into_owned()),
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// Reads one frame from a blocking reader; `Ok(None)` at a clean end of
    /// stream, which is only between two frames: a stream that ends inside a
    /// header is cut short (`UnexpectedEof`), like one that ends inside a payload.
    pub fn read_from(r: &mut impl std::io::Read) -> std::io::Result<Option<Self>> {
        let mut header = [0u8; HEADER_BYTES];
        let mut got = 0;
        while got < HEADER_BYTES {
            match r.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the shell stream ended inside a frame header",
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let invalid = |e: FrameError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let (kind, len) = Self::header(header).map_err(invalid)?;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload)?;
        Self::from_parts(kind, payload).map(Some).map_err(invalid)
    }
}

/// A `TERM` value safe to pass on: letters, digits and `.-_+`, at most 64 bytes.
pub fn valid_term(term: &str) -> bool {
    !term.is_empty()
        && term.len() <= 64
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Data(b"id -u\r".to_vec()),
            Frame::Data(Vec::new()),
            Frame::Resize {
                rows: 50,
                cols: 200,
            },
            Frame::Exit(-1),
            Frame::Exit(130),
            Frame::Closed("hive-c0re is stopping".into()),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut r = bytes.as_slice();
        for f in &frames {
            assert_eq!(Frame::read_from(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read_from(&mut r).unwrap(), None);
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(
            Frame::Resize { rows: 24, cols: 80 }.encode(),
            [1, 0, 0, 0, 4, 0, 24, 0, 80]
        );
        assert_eq!(
            Frame::Data(b"hi".to_vec()).encode(),
            [0, 0, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(Frame::Exit(0).encode(), [2, 0, 0, 0, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn long_data_is_split() {
        let bytes = vec![7u8; MAX_PAYLOAD * 2 + 3];
        let enc = Frame::data(&bytes);
        let mut r = enc.as_slice();
        let mut got = Vec::new();
        while let Some(Frame::Data(d)) = Frame::read_from(&mut r).unwrap() {
            assert!(d.len() <= MAX_PAYLOAD);
            got.extend(d);
        }
        assert_eq!(got, bytes);
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(
            Frame::header([0, 0, 1, 0, 1]),
            Err(FrameError::TooLong(65537))
        );
        assert_eq!(
            Frame::from_parts(9, vec![]),
            Err(FrameError::UnknownKind(9))
        );
        assert!(matches!(
            Frame::from_parts(1, vec![0, 1, 2]),
            Err(FrameError::BadLength { kind: 1, len: 3 })
        ));
        let mut truncated: &[u8] = &[0, 0, 0, 0, 5, b'a'];
        assert!(Frame::read_from(&mut truncated).is_err());
    }

    /// Found by fuzzing (fuzz/fuzz_targets/shell_frames.rs): a stream cut
    /// inside a header read as a clean end.
    #[test]
    fn a_stream_cut_inside_a_header_is_not_a_clean_end() {
        let mut cut: &[u8] = &[0x03, 0x18, b'b', b'c'];
        let e = Frame::read_from(&mut cut).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut bytes = Frame::Exit(0).encode();
        bytes.push(0x00);
        let mut r = bytes.as_slice();
        assert_eq!(Frame::read_from(&mut r).unwrap(), Some(Frame::Exit(0)));
        assert!(Frame::read_from(&mut r).is_err());
        let mut empty: &[u8] = &[];
        assert_eq!(Frame::read_from(&mut empty).unwrap(), None);
    }

    #[test]
    fn terms() {
        assert!(valid_term("xterm-256color"));
        assert!(valid_term("screen.xterm+x_y"));
        assert!(!valid_term(""));
        assert!(!valid_term("a b"));
        assert!(!valid_term("x;rm"));
        assert!(!valid_term(&"x".repeat(65)));
    }
}
