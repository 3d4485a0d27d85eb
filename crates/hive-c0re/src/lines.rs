//! Bounded JSON-lines framing shared by host.sock and agent.sock.
//!
//! A line over the limit is refused without buffering it: its bytes are
//! skipped up to the next newline, and the connection stays usable.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// What reading one line produced.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A complete line, newline stripped.
    Data(Vec<u8>),
    /// A line longer than the limit was skipped.
    TooLong,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Reads one line of at most `max` bytes.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut skipping = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(Line::Eof);
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if !skipping && buf.len() + i <= max {
                    buf.extend_from_slice(&chunk[..i]);
                } else {
                    skipping = true;
                }
                r.consume(i + 1);
                if skipping {
                    return Ok(Line::TooLong);
                }
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                return Ok(Line::Data(buf));
            }
            None => {
                let n = chunk.len();
                if !skipping && buf.len() + n <= max {
                    buf.extend_from_slice(chunk);
                } else {
                    skipping = true;
                    buf = Vec::new();
                }
                r.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_lines_and_skips_long_ones() {
        let input = b"{\"a\":1}\nxxxxxxxxxxxxxxxxxxxx\n{}\r\npartial".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(4, &input[..]);
        assert_eq!(
            read_line(&mut r, 10).await.unwrap(),
            Line::Data(b"{\"a\":1}".to_vec())
        );
        assert_eq!(read_line(&mut r, 10).await.unwrap(), Line::TooLong);
        assert_eq!(
            read_line(&mut r, 10).await.unwrap(),
            Line::Data(b"{}".to_vec())
        );
        assert_eq!(read_line(&mut r, 10).await.unwrap(), Line::Eof);
    }
}
