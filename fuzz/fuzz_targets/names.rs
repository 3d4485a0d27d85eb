//! Names: `AgentName::parse` and `Mailbox::parse`.
//!
//! A name that parses is a safe path component (no '/', "..", NUL; only
//! `[a-z0-9-]`, 1 to 31 characters, starting with a letter, not reserved),
//! parses to itself again, and survives JSON; the two parsers agree.
#![no_main]

use hive_sh4re::name::{MAX_NAME_LEN, RESERVED};
use hive_sh4re::{AgentName, Mailbox};
use libfuzzer_sys::fuzz_target;

fn check_agent(n: &AgentName) {
    let s = n.as_str();
    assert!(
        !s.contains('/') && !s.contains("..") && !s.contains('\0'),
        "{s:?}"
    );
    assert!((1..=MAX_NAME_LEN).contains(&s.len()), "{s:?}");
    assert!(s.starts_with(|c: char| c.is_ascii_lowercase()), "{s:?}");
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "{s:?}"
    );
    assert!(!RESERVED.contains(&s), "{s:?}");
    assert_eq!(AgentName::parse(s).as_ref(), Ok(n));
    assert_eq!(n.container(), format!("h-{s}"));
    let json = serde_json::to_string(n).unwrap();
    assert_eq!(&serde_json::from_str::<AgentName>(&json).unwrap(), n);
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let agent = AgentName::parse(&s);
    let mailbox = Mailbox::parse(&s);
    match &agent {
        Ok(n) => {
            check_agent(n);
            assert_eq!(n.as_str(), s);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match &mailbox {
        Ok(m) => {
            assert_eq!(m.as_str(), s);
            assert_eq!(Mailbox::parse(m.as_str()).as_ref(), Ok(m));
            let json = serde_json::to_string(m).unwrap();
            assert_eq!(&serde_json::from_str::<Mailbox>(&json).unwrap(), m);
            match m {
                Mailbox::Agent(n) => assert_eq!(agent.as_ref(), Ok(n)),
                Mailbox::Operator | Mailbox::System => assert!(agent.is_err()),
            }
        }
        Err(_) => assert!(agent.is_err()),
    }
});
