//! Bytes as lowercase hex, and random ones from the kernel: tokens, tickets,
//! ids and signatures are all spelled this way.

use std::io::{self, Read};

/// `bytes` as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether two secrets (or their hashes) are equal, compared without
/// stopping at the first difference, so timing tells nothing but the length.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random bytes from the kernel (`/dev/urandom`), as hex.
pub fn random(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(encode(&buf))
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_each_byte_as_two_lowercase_digits() {
        assert_eq!(super::encode(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
    }

    #[test]
    fn random_gives_n_bytes_and_differs() {
        let a = super::random(16).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, super::random(16).unwrap());
    }
}
