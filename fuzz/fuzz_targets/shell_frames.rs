//! The `shell` verb's frames (`hive_sh4re::shell`), both directions.
//!
//! Reading arbitrary bytes never panics; every frame read encodes back to
//! the bytes it came from (a `closed` sentence that was not UTF-8 reads
//! lossily, so it only round-trips as a frame); a stream ends cleanly only
//! where a frame ends; data split by `Frame::data` reads back whole; and a
//! frame built from the input encodes and reads back as itself.
#![no_main]

use hive_sh4re::shell::{Frame, HEADER_BYTES, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fn read_all(mut r: &[u8]) {
    loop {
        let before = r;
        match Frame::read_from(&mut r) {
            Ok(Some(frame)) => {
                let consumed = &before[..before.len() - r.len()];
                let lossy = matches!(frame, Frame::Closed(_))
                    && std::str::from_utf8(&consumed[HEADER_BYTES..]).is_err();
                if !lossy {
                    assert_eq!(frame.encode(), consumed, "{frame:?}");
                }
            }
            Ok(None) => {
                assert!(
                    before.is_empty(),
                    "a clean end with {} bytes left",
                    before.len()
                );
                return;
            }
            Err(_) => return,
        }
    }
}

fn round_trip(frame: Frame) {
    let bytes = frame.encode();
    let mut r = bytes.as_slice();
    assert_eq!(Frame::read_from(&mut r).unwrap(), Some(frame));
    assert!(r.is_empty());
}

fn split_data(data: &[u8]) {
    let bytes = Frame::data(data);
    let mut r = bytes.as_slice();
    let mut got = Vec::new();
    while let Some(frame) = Frame::read_from(&mut r).unwrap() {
        let Frame::Data(d) = frame else {
            panic!("Frame::data made {frame:?}")
        };
        assert!(d.len() <= MAX_PAYLOAD);
        got.extend(d);
    }
    assert_eq!(got, data);
}

fuzz_target!(|data: &[u8]| {
    read_all(data);
    split_data(data);
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let word = |i: usize| rest.get(i).copied().unwrap_or(0);
    round_trip(match kind % 4 {
        0 => Frame::Data(rest[..rest.len().min(MAX_PAYLOAD)].to_vec()),
        1 => Frame::Resize {
            rows: u16::from_be_bytes([word(0), word(1)]),
            cols: u16::from_be_bytes([word(2), word(3)]),
        },
        2 => Frame::Exit(i32::from_be_bytes([word(0), word(1), word(2), word(3)])),
        _ => {
            let mut why = String::from_utf8_lossy(rest).into_owned();
            while why.len() > MAX_PAYLOAD {
                why.pop();
            }
            Frame::Closed(why)
        }
    });
});
