//! A full disk keeps the hive operable (etcd's NOSPACE alarm as the model):
//! below the free-space floor new sends are refused with a sentence naming
//! the file system and the space left, while recv and status keep working;
//! the daemon starts again on the full disk, and once space is back every
//! acknowledged message is delivered exactly once. A state file system
//! turned read-only raises the database alarm.
//!
//! The state dir is a small tmpfs in a mount namespace of the test's own
//! (an ext4 image where it turns read-only).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use common::{Opts, TestHive};
use serde_json::json;

/// Size of the state's tmpfs.
const FS_BYTES: u64 = 24 << 20;
/// The floor the hive keeps.
const FLOOR: &str = "6MiB";
/// Inodes of the state's tmpfs when a test runs it out of them: a floor of 200 (5 %).
const FS_INODES: u64 = 4000;

/// Writes `path` until the file system has no room left.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0x5a_u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    let e = f.write_all(&[0; 512]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
}

/// Makes empty files in `dir` until the file system has no inode left; how many.
fn exhaust_inodes(dir: &Path) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    for n in 0.. {
        if let Err(e) = std::fs::File::create(dir.join(format!("f{n}"))) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return n;
        }
    }
    unreachable!()
}

/// The alarm of `status --json` (its first line while the alarm is on).
fn alarm(hive: &TestHive) -> Option<serde_json::Value> {
    let out = hive.ok(&["status", "--json"]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next()?).ok()?;
    first.get("space_alarm").cloned()
}

/// Up to `max` messages of the operator's inbox: (id, from, body).
fn recv(hive: &TestHive, max: u32) -> Vec<(i64, String, String)> {
    let v = hive.request(json!({"cmd": "recv", "max": max}));
    assert_eq!(v["ok"], true, "{v}\n{}", hive.log());
    recv_answer(&v)
}

/// The messages of a recv answer: (id, from, body).
fn recv_answer(v: &serde_json::Value) -> Vec<(i64, String, String)> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().unwrap(),
                m["from"].as_str().unwrap().to_owned(),
                m["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn send(hive: &TestHive, body: &str) -> serde_json::Value {
    hive.request(json!({"cmd": "send", "to": "operator", "body": body}))
}

#[test]
fn a_full_disk_refuses_sends_keeps_recv_and_status_and_a_restart_and_loses_nothing() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting the test's tmpfs needs root");
        return;
    }
    let mut opts = Opts {
        state_tmpfs: Some(FS_BYTES),
        ..Opts::default()
    };
    // Each agent's default quota is a quarter of this small file system:
    // these tests fill it past that on purpose.
    opts.args.extend([
        "--min-free-space".to_owned(),
        FLOOR.to_owned(),
        "--state-quota".to_owned(),
        "none".to_owned(),
    ]);
    let mut hive = TestHive::start_with(opts);
    let ns = hive.mountns.clone().unwrap();
    assert_eq!(alarm(&hive), None, "{}", hive.log());

    let mut acked = vec![];
    for i in 0..300 {
        let v = send(&hive, &format!("before {i}"));
        assert_eq!(v["ok"], true, "{v}");
        acked.push(v["message_id"].as_i64().unwrap());
    }

    // Another program fills the disk to the last block.
    let filler = hive.state_dir().join("filler");
    ns.enter(|| fill(&filler));
    hive.wait_for("the free-space alarm", 10, |h| alarm(h).is_some());
    let a = alarm(&hive).unwrap();
    assert!(
        a["filesystem"]
            .as_str()
            .unwrap()
            .contains(&format!("{} (tmpfs)", hive.state_dir().display())),
        "{a}"
    );
    assert_eq!(a["floor_bytes"], 6 << 20);

    // Sends are refused with the sentence, through host.sock and the CLI.
    let v = send(&hive, "while full");
    assert_eq!(v["ok"], false, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("the disk is nearly full"), "{err}");
    assert!(err.contains("(tmpfs) has "), "{err}");
    assert!(
        err.contains("free, below the hive's floor of 6.0 MiB"),
        "{err}"
    );
    let out = hive.cli(&["send", "operator", "while full"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the disk is nearly full"),
        "{out:?}"
    );
    // So is a new config repo (the manager's request_init_config as well):
    // git's files, written as root.
    let out = hive.cli(&["init-config", "carol"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the disk is nearly full"),
        "{out:?}"
    );
    assert!(!hive.state_dir().join("configs/carol").exists());

    // Status shows it; recv drains (and acknowledges) what was sent before.
    let table = hive.ok(&["status"]);
    assert!(table.starts_with("DISK NEARLY FULL since "), "{table}");
    let mut delivered: HashMap<i64, String> = HashMap::new();
    let mut notices = vec![];
    let mut take = |got: Vec<(i64, String, String)>| {
        for (id, from, body) in got {
            if from == "system" {
                notices.push(body);
            } else {
                assert!(
                    delivered.insert(id, body).is_none(),
                    "message {id} delivered twice"
                );
            }
        }
    };
    let first = recv(&hive, 100);
    assert_eq!(first.len(), 100);
    take(first);

    // kill -9: the daemon starts again on the full disk, in the same mode,
    // and recv goes on in the room its reserve left.
    hive.kill9();
    hive.serve();
    assert!(alarm(&hive).is_some(), "{}", hive.log());
    let v = send(&hive, "after restart");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the disk is nearly full"),
        "{v}"
    );
    let second = recv(&hive, 100);
    assert_eq!(second.iter().filter(|m| m.1 != "system").count(), 100);
    take(second);

    // kill -9 again, and this time the disk is filled to the last byte (the
    // reserve's room too): the daemon still starts, status and the refusal
    // work, and a recv that cannot be recorded says so.
    hive.kill9();
    let filler2 = hive.state_dir().join("filler2");
    ns.enter(|| fill(&filler2));
    hive.serve();
    assert!(alarm(&hive).is_some(), "{}", hive.log());
    assert!(hive.ok(&["status"]).starts_with("DISK NEARLY FULL"));
    let v = send(&hive, "after the second restart");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the disk is nearly full"),
        "{v}"
    );
    let v = hive.request(json!({"cmd": "recv", "max": 100}));
    if v["ok"] == false {
        let err = v["error"].as_str().unwrap();
        assert!(
            err.starts_with("the disk is full: ") && err.contains("has no room left"),
            "{err}"
        );
    } else {
        take(recv_answer(&v));
    }

    // Space comes back: the alarm clears by itself, sends work again.
    ns.enter(|| {
        std::fs::remove_file(&filler).unwrap();
        std::fs::remove_file(&filler2).unwrap();
    });
    hive.wait_for("the alarm to clear", 10, |h| alarm(h).is_none());
    let v = send(&hive, "after");
    assert_eq!(v["ok"], true, "{v}");
    acked.push(v["message_id"].as_i64().unwrap());
    take(recv(&hive, 1000));
    take(recv(&hive, 1000));

    let mut got: Vec<i64> = delivered.keys().copied().collect();
    got.sort();
    assert_eq!(got, acked, "every acknowledged message, once");
    assert!(
        notices
            .iter()
            .any(|n| n.contains("the disk is nearly full")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.starts_with("disk space is back")),
        "{notices:?}"
    );
    hive.stop();
}

/// A hive left alone for weeks is watched through its webhooks: the alarm
/// (which refuses every send in the hive until someone frees space) was
/// only a banner and a line in an inbox that nobody reads from afar. It
/// now reaches the webhooks that want `disk_full`, around the store, which
/// has no room to queue it; and again when there is room. It names the
/// agents whose state dirs are largest, the one that filled the disk
/// first (it named the file system alone), and status shows each size.
#[test]
fn the_free_space_alarm_reaches_the_webhooks_and_so_does_its_end() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting the test's tmpfs needs root");
        return;
    }
    let (receiver, _dir, config) = common::webhook::slack_receiver(&["disk_full"]);
    // And a json webhook, whose body carries the id.
    let addr = std::fs::read_to_string(&config).unwrap();
    let addr = addr
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!(
        "\n[[webhooks]]\nurl = \"http://{addr}/json\"\nformat = \"json\"\nsecret = \"WEBHOOK_HMAC\"\nkinds = [\"disk_full\"]\n"
    ));
    std::fs::write(&config, toml).unwrap();
    let mut opts = Opts {
        state_tmpfs: Some(FS_BYTES),
        ..Opts::default()
    };
    // Each agent's default quota is a quarter of this small file system:
    // these tests fill it past that on purpose.
    opts.args.extend([
        "--min-free-space".to_owned(),
        FLOOR.to_owned(),
        "--state-quota".to_owned(),
        "none".to_owned(),
    ]);
    opts.env
        .push(("HIVE_CONFIG".into(), config.display().to_string()));
    let hive = TestHive::start_with(opts);
    let mut set = hive.command();
    set.args(["secret", "set", "WEBHOOK_HMAC"])
        .stdin(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"a-key-for-the-test\n").unwrap();
    assert!(child.wait().unwrap().success());
    let ns = hive.mountns.clone().unwrap();
    let alerts = || -> Vec<String> {
        receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == "/slack")
            .map(|g| g.body.clone())
            .collect()
    };

    hive.ok(&["spawn", "alice"]);
    hive.ok(&["spawn", "bob"]);
    let state = |agent: &str| hive.state_dir().join("agents").join(agent).join("state");
    // bob keeps a little, alice writes until the disk is full.
    ns.enter(|| std::fs::write(state("bob").join("notes-copy"), vec![1u8; 64 << 10]).unwrap());
    let filler = state("alice").join("filler");
    ns.enter(|| fill(&filler));
    hive.wait_for("the alarm's webhook", 20, |_| alerts().len() == 1);
    let first = &alerts()[0];
    assert!(
        first.contains("Disk nearly full")
            && first.contains("the disk is nearly full")
            && first.contains("(tmpfs)")
            && first.contains("The largest agents' state dirs here: alice "),
        "{first}"
    );
    let bytes = |agent: &str| {
        hive.row(agent).unwrap()["state_bytes"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(bytes("alice") > 10 << 20, "{:?}", hive.row("alice"));
    assert!(
        (64 << 10..1 << 20).contains(&bytes("bob")),
        "{:?}",
        hive.row("bob")
    );

    ns.enter(|| std::fs::remove_file(&filler).unwrap());
    hive.wait_for("the all-clear's webhook", 20, |_| alerts().len() == 2);
    assert!(
        alerts()[1].contains("disk space is back"),
        "{}",
        alerts()[1]
    );
    // Sent around the queue, each alert has an id of its own, below 0:
    // with one id for all, a receiver that drops repeats (and Matrix, by
    // its transaction id) kept only the first.
    let ids = || -> Vec<i64> {
        receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == "/json")
            .map(|g| {
                serde_json::from_str::<serde_json::Value>(&g.body).unwrap()["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect()
    };
    hive.wait_for("both alerts at the json webhook", 20, |_| ids().len() == 2);
    let ids = ids();
    assert!(ids[0] < 0 && ids[1] < 0 && ids[0] != ids[1], "{ids:?}");
}

/// An agent that makes empty files until its file system has no inode left
/// takes next to no space: the alarm watched bytes alone and never went on,
/// and then every rootfs, sqlite journal and config repo failed for want of
/// an inode, the operator told nothing. It now goes on for inodes too, says
/// which ran out, and names the agent with the most files.
#[test]
fn running_out_of_inodes_raises_the_alarm_and_names_the_agent_with_the_most_files() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting the test's tmpfs needs root");
        return;
    }
    let mut opts = Opts {
        state_tmpfs: Some(FS_BYTES),
        state_tmpfs_inodes: Some(FS_INODES),
        ..Opts::default()
    };
    // Each agent's default quota is a quarter of this small file system:
    // these tests fill it past that on purpose.
    opts.args.extend([
        "--min-free-space".to_owned(),
        FLOOR.to_owned(),
        "--state-quota".to_owned(),
        "none".to_owned(),
    ]);
    let mut hive = TestHive::start_with(opts);
    let ns = hive.mountns.clone().unwrap();
    hive.ok(&["spawn", "alice"]);
    assert_eq!(alarm(&hive), None, "{}", hive.log());

    let junk = hive.state_dir().join("agents/alice/state/junk");
    let made = ns.enter(|| exhaust_inodes(&junk));
    assert!(made > FS_INODES / 2, "{made} files");
    hive.wait_for("the inode alarm", 10, |h| alarm(h).is_some());
    let a = alarm(&hive).unwrap();
    assert_eq!(a["floor_inodes"], FS_INODES / 20, "{a}");
    assert!(a["free_inodes"].as_u64().unwrap() < FS_INODES / 20, "{a}");
    assert!(
        a["free_bytes"].as_u64().unwrap() > a["floor_bytes"].as_u64().unwrap(),
        "the bytes are plenty: {a}"
    );
    let message = a["message"].as_str().unwrap();
    assert!(
        message.contains("(tmpfs) has ")
            && message.contains("free inodes (files) left, below the hive's floor of 200")
            && message.contains("until files are deleted there"),
        "{message}"
    );

    // Sends are refused with that sentence.
    let v = send(&hive, "while out of inodes");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["error"], a["message"], "{v}");
    let out = hive.cli(&["send", "operator", "while out of inodes"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("free inodes (files) left"),
        "{out:?}"
    );

    // The files go: the alarm clears by itself, sends work again.
    ns.enter(|| std::fs::remove_dir_all(&junk).unwrap());
    hive.wait_for("the alarm to clear", 10, |h| alarm(h).is_none());
    let v = send(&hive, "after");
    assert_eq!(v["ok"], true, "{v}");

    let notices: Vec<String> = recv(&hive, 100)
        .into_iter()
        .filter(|m| m.1 == "system")
        .map(|m| m.2)
        .collect();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("free inodes (files) left")
                && n.contains("The agents' state dirs with the most files here: alice ")),
        "{notices:?}"
    );
    assert!(
        notices.iter().any(|n| n.starts_with("disk space is back")),
        "{notices:?}"
    );
    hive.stop();
}

/// The dashboard token of [`on_ext4`]'s hive.
const TOKEN: &str = "disk-full-test-token";

/// A hive whose state dir is an ext4 file system of its own (see
/// [`common::TestMountNs::ext4`]), heartbeating every second, its dashboard
/// on a free loopback port, `config` its hive.toml; None where the host
/// cannot make one.
fn on_ext4(config: &Path) -> Option<TestHive> {
    let mut opts = Opts::default();
    opts.args.retain(|a| a != "--no-dashboard");
    opts.args.extend([
        "--dashboard".into(),
        "127.0.0.1:0".into(),
        // Not a quarter of the small image: the test fills it on purpose.
        "--state-quota".into(),
        "none".into(),
    ]);
    opts.env.extend([
        ("HIVE_HEARTBEAT_SECS".into(), "1".into()),
        ("HIVE_DASHBOARD_TOKEN".into(), TOKEN.into()),
        ("HIVE_CONFIG".into(), config.display().to_string()),
    ]);
    let mut hive = TestHive::new_with(opts);
    let image = hive.dir.path().join("state.img");
    hive.mountns = Some(common::TestMountNs::ext4(
        &hive.state_dir(),
        &image,
        64 << 20,
    )?);
    hive.serve();
    Some(hive)
}

/// The database alarm the dashboard serves (null while it is off).
fn database_alarm(hive: &TestHive) -> serde_json::Value {
    let nodes: serde_json::Value =
        serde_json::from_str(hive.ok(&["nodes", "--json"]).trim()).unwrap();
    let address = nodes["address"].as_str().unwrap();
    common::database_alarm_at(address, TOKEN)
}

/// The state's file system turns read-only after an error, as ext4's
/// `errors=remount-ro` does on a failing disk: every write of the database
/// fails (sqlite: disk I/O error) while reads work. The heartbeat failed and
/// only logged; no alarm, no webhook. Now the database alarm is on within a
/// few heartbeats, saying the file system is read-only and what to do, and
/// the webhooks that want `node_down` hear of it. Once the file system is
/// repaired and serve started again, nothing stored before is lost.
///
/// An ext4 image on a loop device, not the tmpfs of the other tests: a
/// file system with files open for writing (the database's) cannot be
/// remounted read-only from outside (EBUSY), only by the kernel on an error,
/// which `/sys/fs/ext4/DEV/trigger_fs_error` raises. Nor can it be made
/// writable again in place (ext4 marks it `emergency_ro`), so the repair is
/// the operator's: stop serve, check it, mount it again.
#[test]
fn a_state_file_system_turned_read_only_raises_the_database_alarm() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting the test's file system needs root");
        return;
    }
    let (receiver, _dir, config) = common::webhook::slack_receiver(&["node_down"]);
    let Some(mut hive) = on_ext4(&config) else {
        return;
    };
    let ns = hive.mountns.clone().unwrap();
    let state = hive.state_dir();
    let mountinfo = ns.enter(|| std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap());
    let device = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(state.to_str().unwrap()))
        .and_then(|l| l.split(" - ext4 ").nth(1))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no ext4 at {}:\n{mountinfo}", state.display()))
        .trim_start_matches("/dev/")
        .to_owned();
    let trigger = format!("/sys/fs/ext4/{device}/trigger_fs_error");
    if !Path::new(&trigger).exists() {
        eprintln!("skipped: this kernel has no {trigger}");
        return;
    }
    let v = send(&hive, "stored before");
    assert_eq!(v["ok"], true, "{v}");
    assert!(database_alarm(&hive).is_null());

    std::fs::write(&trigger, "hive-c0re test").unwrap();
    hive.wait_for("the database alarm", 10, |h| !database_alarm(h).is_null());
    let alarm = database_alarm(&hive);
    let message = alarm["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "the hive's database refuses writes: the file system at {} (ext4) is read-only (",
            state.display()
        )) && message.contains("repair it and make it writable again"),
        "{alarm}\n{}",
        hive.log()
    );
    hive.wait_for("the webhook's alert", 10, |_| {
        receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .any(|g| g.body.contains("refuses writes") && g.body.contains("is read-only"))
    });
    // Reads still work; writes are refused, not taken for done.
    assert!(hive.ok(&["status"]).contains("no agents yet"));
    let v = send(&hive, "while read-only");
    assert_eq!(v["ok"], false, "{v}");

    // The operator's repair.
    hive.stop();
    let dir = state.to_str().unwrap();
    ns.run(&["umount", dir]);
    let image = hive.dir.path().join("state.img");
    let checked = std::process::Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(&image)
        .output()
        .unwrap();
    // 1: errors found and fixed.
    assert!(checked.status.code().is_some_and(|c| c <= 1), "{checked:?}");
    let image = image.to_str().unwrap();
    ns.run(&["mount", "-o", "loop,errors=remount-ro", image, dir]);
    hive.serve();
    assert!(database_alarm(&hive).is_null());
    let kept = recv(&hive, 10);
    assert!(
        kept.len() == 1 && kept[0].2 == "stored before",
        "{kept:?}\n{}",
        hive.log()
    );
    let v = send(&hive, "after");
    assert_eq!(v["ok"], true, "{v}");
}
