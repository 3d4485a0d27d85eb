//! `agent.toml`: `hive_sh4re::config::AgentConfig::from_toml` (parse and validate).
//!
//! A config that is accepted writes itself back (`to_toml`) as text that is
//! accepted as the same config; its recipients are mailboxes, and its tools
//! never smuggle a comma into claude's `--allowedTools` list.
#![no_main]

use hive_sh4re::Mailbox;
use hive_sh4re::config::AgentConfig;
use hive_sh4re::tools::Tool;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match AgentConfig::from_toml(text) {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(e.to_string().starts_with("agent.toml is invalid: "));
            return;
        }
    };
    cfg.validate().expect("an accepted config validates");
    let written = cfg.to_toml();
    let back = AgentConfig::from_toml(&written)
        .unwrap_or_else(|e| panic!("its own agent.toml is refused: {e}\n{written}"));
    assert_eq!(back, cfg);
    for r in &cfg.allowed_recipients {
        assert!(Mailbox::parse(r).is_ok(), "{r:?}");
    }
    for manager in [false, true] {
        let arg = cfg.allowed_tools_arg(manager);
        assert_eq!(
            arg.split(',').count(),
            Tool::granted(manager).count() + cfg.allowed_tools.len(),
            "{arg:?}"
        );
    }
});
