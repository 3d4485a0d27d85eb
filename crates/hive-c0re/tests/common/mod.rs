//! A real hive for end-to-end tests: `hive-c0re serve` in a temp dir, driven
//! through its CLI and raw host.sock lines, the way an operator does.
#![allow(dead_code)]

pub mod relay;
pub mod webhook;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hive-c0re"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The claude CLI installed by the test set-up, if any (`HIVE_CLAUDE_BIN` or the project-local install).
pub fn claude_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("HIVE_CLAUDE_BIN") {
        return Some(PathBuf::from(b));
    }
    let local = repo_root().join("tools/claude/node_modules/.bin/claude");
    local.exists().then_some(local)
}

/// Options of a test hive.
#[derive(Clone)]
pub struct Opts {
    pub runtime: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The daemon's soft open-file limit at start (the test's own when None).
    pub nofile: Option<u64>,
    /// A network namespace the daemon runs in (the host's when `None`).
    pub netns: Option<TestNetns>,
    /// Puts the state dir on a tmpfs of this many bytes, in a mount namespace
    /// of the test's own (see [`TestMountNs`]); the daemon runs in it.
    pub state_tmpfs: Option<u64>,
    /// Caps that tmpfs at this many inodes (`nr_inodes`; tmpfs's default when None).
    pub state_tmpfs_inodes: Option<u64>,
    /// Gives a root daemon a uid registry of its own, as on a host of its own
    /// (a fresh tmpfs on `/run/hyperhive-uids` in a mount namespace of the
    /// test's; not with `state_tmpfs`).
    pub own_uid_registry: bool,
    /// Starts the daemon in a session of its own with a terminal (a pty the
    /// test holds) as its controlling tty, as an operator's shell would.
    pub tty: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            runtime: "process",
            args: vec!["--no-manager".into(), "--no-dashboard".into()],
            env: vec![],
            nofile: None,
            netns: None,
            state_tmpfs: None,
            state_tmpfs_inodes: None,
            own_uid_registry: false,
            tty: false,
        }
    }
}

/// A fresh database on the test binary's throwaway PostgreSQL cluster
/// (`TestCluster::shared`, stopped and removed when the binary ends).
pub struct TestDatabase {
    /// Its name on the cluster.
    pub name: String,
    /// Its URL, without the password.
    pub url: String,
    /// The password of the URL's user.
    pub password: String,
}

/// A runtime for a test's own calls into async code.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl TestDatabase {
    /// Makes the database refuse connections and ends those it has (`reachable`
    /// false), or take them again: a database server out of reach, for this
    /// database only, on the shared cluster.
    pub fn set_reachable(&self, reachable: bool) {
        let name = &self.name;
        let mut sql = format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {reachable};");
        if !reachable {
            sql.push_str(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
            ));
        }
        current_thread().block_on(async {
            let admin = hive_c0re::store::pg::TestCluster::shared().admin().await;
            admin.batch_execute(&sql).await.unwrap();
        });
    }

    /// Runs `sql` on this database as the cluster's superuser.
    pub fn sql(&self, sql: &str) {
        current_thread().block_on(async {
            let c = hive_c0re::store::pg::TestCluster::shared()
                .connect_as("postgres", &self.name)
                .await;
            c.batch_execute(sql).await.unwrap();
        });
    }

    /// The number `sql` (a `SELECT count(*)`) counts, as the cluster's superuser.
    pub fn count(&self, sql: &str) -> i64 {
        current_thread().block_on(async {
            let c = hive_c0re::store::pg::TestCluster::shared()
                .connect_as("postgres", &self.name)
                .await;
            c.query_one(sql, &[]).await.unwrap().get(0)
        })
    }

    /// Takes `table`'s strongest lock in a transaction left open (as the
    /// superuser) and returns what holds it: every reader and writer of the
    /// table waits until both are dropped or the database is taken away.
    pub fn lock(&self, table: &str) -> (tokio::runtime::Runtime, tokio_postgres::Client) {
        let rt = current_thread();
        let client = rt.block_on(async {
            let c = hive_c0re::store::pg::TestCluster::shared()
                .connect_as("postgres", &self.name)
                .await;
            c.batch_execute(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;"
            ))
            .await
            .unwrap();
            c
        });
        (rt, client)
    }

    /// [`Self::set_reachable`] false, ending first (and waiting until they
    /// are gone) the sessions that wait for a lock in a statement holding
    /// `statement`: they fail for the database out of reach before whatever
    /// holds the lock is ended and would let them through.
    pub fn take_away_waiting_in(&self, statement: &str) {
        let name = &self.name;
        current_thread().block_on(async {
            let admin = hive_c0re::store::pg::TestCluster::shared().admin().await;
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false;"
                ))
                .await
                .unwrap();
            admin
                .execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1 \
                     AND wait_event_type = 'Lock' AND strpos(query, $2) > 0",
                    &[name, &statement],
                )
                .await
                .unwrap();
        });
        self.set_reachable(false);
    }

    /// Waits (up to 20 s) until a session on this database waits for a lock
    /// in a statement that holds `statement` (autovacuum may wait on the
    /// same table, in statements of its own).
    pub fn wait_for_lock_waiter(&self, statement: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        current_thread().block_on(async {
            let admin = hive_c0re::store::pg::TestCluster::shared().admin().await;
            loop {
                let waiting: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' \
                         AND strpos(query, $2) > 0",
                        &[&self.name, &statement],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if waiting > 0 {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for a session to wait for a lock in {statement:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    /// A handle on the database's store, as a node has one, and a runtime to drive it.
    pub fn store(&self) -> (tokio::runtime::Runtime, hive_c0re::store::Db) {
        let rt = current_thread();
        let store = rt.block_on(async {
            let mut settings = hive_c0re::store::pg::PgSettings::new(&self.url);
            settings.password = Some(self.password.clone());
            hive_c0re::store::Db::connect_postgres(&settings, hive_c0re::store::Limits::default())
                .await
                .unwrap()
        });
        (rt, store)
    }

    /// A new empty database; None, with a note on stderr, when PostgreSQL is not installed.
    pub fn create() -> Option<Self> {
        use hive_c0re::store::pg::TestCluster;
        if TestCluster::missing() {
            return None;
        }
        let cluster = TestCluster::shared();
        let name = current_thread().block_on(cluster.database());
        let settings = cluster.settings(&name);
        Some(Self {
            name,
            password: settings
                .password
                .clone()
                .expect("the cluster has a password"),
            url: settings.url,
        })
    }
}

impl Opts {
    /// A hive on `db` (`serve --database URL`, the password in `PGPASSWORD`), as node `node`.
    pub fn postgres(db: &TestDatabase, node: &str) -> Self {
        let mut opts = Self::default();
        opts.args
            .extend(["--database", &db.url, "--node", node].map(str::to_owned));
        opts.env
            .push(("PGPASSWORD".to_owned(), db.password.clone()));
        opts
    }
}

/// A network namespace made for a test (gone with its last user), with helpers
/// to configure it and to run code and programs in it.
#[derive(Clone)]
pub struct TestNetns(std::sync::Arc<std::os::fd::OwnedFd>);

impl TestNetns {
    /// A fresh network namespace with nothing but a loopback that is down.
    pub fn new() -> Self {
        let fd = std::thread::spawn(|| {
            // SAFETY: unshare of this short-lived thread's network namespace only.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "unshare: {}",
                std::io::Error::last_os_error()
            );
            std::os::fd::OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").unwrap())
        })
        .join()
        .unwrap();
        Self(std::sync::Arc::new(fd))
    }

    /// Makes `cmd` start in this namespace.
    pub fn put(&self, cmd: &mut Command) {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = self.0.as_raw_fd();
        // SAFETY: one setns between fork and exec, on an fd we hold.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Runs a program in this namespace; panics when it fails.
    pub fn run(&self, argv: &[&str]) {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        self.put(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a thread in this namespace (sockets it makes stay there).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns of this scoped thread only.
                assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0);
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl TestNetns {
    /// A path naming this namespace for programs the test starts (`ip ... netns PATH`).
    pub fn path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/{}/fd/{}", std::process::id(), self.0.as_raw_fd())
    }
}

/// Several hosts on one machine, for tests of several nodes: a namespace for
/// the database and one per node, each node joined to the database's by a
/// veth pair of its own (node `i` is 10.80.`i`.2, the database 10.80.`i`.1 as
/// node `i` sees it). All of it lives in namespaces the test made: nothing on
/// the machine's own network changes and nothing is left behind.
pub struct Lan {
    /// Where the database runs.
    pub db: TestNetns,
    /// One per node.
    pub nodes: Vec<TestNetns>,
}

impl Lan {
    /// Clients' network, for the database's `pg_hba`.
    pub const CLIENTS: &'static str = "10.80.0.0/16";

    /// The database's namespace and `nodes` more, linked and up.
    pub fn new(nodes: usize) -> Self {
        let db = TestNetns::new();
        db.run(&["ip", "link", "set", "lo", "up"]);
        let nodes = (0..nodes)
            .map(|i| {
                let ns = TestNetns::new();
                let db_side = format!("n{i}");
                ns.run(&["ip", "link", "set", "lo", "up"]);
                ns.run(&[
                    "ip",
                    "link",
                    "add",
                    "up0",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &db_side,
                    "netns",
                    &db.path(),
                ]);
                ns.run(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.80.{i}.2/24"),
                    "dev",
                    "up0",
                ]);
                ns.run(&["ip", "link", "set", "up0", "up"]);
                db.run(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.80.{i}.1/24"),
                    "dev",
                    &db_side,
                ]);
                db.run(&["ip", "link", "set", &db_side, "up"]);
                ns
            })
            .collect();
        Self { db, nodes }
    }

    /// The database's address as node `i` reaches it.
    pub fn db_addr(i: usize) -> String {
        format!("10.80.{i}.1")
    }

    /// Cuts node `i`'s link: its packets go nowhere until [`Lan::restore`].
    pub fn cut(&self, i: usize) {
        self.db
            .run(&["ip", "link", "set", &format!("n{i}"), "down"]);
    }

    /// Brings node `i`'s link back.
    pub fn restore(&self, i: usize) {
        self.db.run(&["ip", "link", "set", &format!("n{i}"), "up"]);
    }
}

/// A private mount namespace made for a test, in which one directory is a
/// tmpfs of a given size; gone with its last user (this handle and the
/// processes put in it), so it needs no cleanup and no mount outside it changes.
#[derive(Clone)]
pub struct TestMountNs(std::sync::Arc<std::os::fd::OwnedFd>);

impl TestMountNs {
    /// A mount namespace where `dir` (created if need be) is a fresh tmpfs
    /// of `bytes`, and of `inodes` inodes when given.
    pub fn tmpfs(dir: &Path, bytes: u64, inodes: Option<u64>) -> Self {
        use nix::mount::{MsFlags, mount};
        let dir = dir.to_path_buf();
        let mut options = format!("size={bytes},mode=0755");
        if let Some(n) = inodes {
            options.push_str(&format!(",nr_inodes={n}"));
        }
        let fd = std::thread::spawn(move || {
            private_mount_namespace(&dir);
            mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .unwrap();
            std::os::fd::OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/mnt").unwrap())
        })
        .join()
        .unwrap();
        Self(std::sync::Arc::new(fd))
    }

    /// A mount namespace where `dir` (created if need be) is an ext4 file
    /// system of `bytes` made in the file `image`, on a loop device, turned
    /// read-only at its first error (`errors=remount-ro`); the device goes
    /// with the mount. None, with a note, where the host cannot (no
    /// `mkfs.ext4`, no loop device).
    pub fn ext4(dir: &Path, image: &Path, bytes: u64) -> Option<Self> {
        if which("mkfs.ext4").is_none() {
            eprintln!("skipped: no mkfs.ext4 on this host");
            return None;
        }
        std::fs::File::create(image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .status()
            .unwrap();
        assert!(made.success(), "mkfs.ext4: {made}");
        let (dir, image) = (dir.to_path_buf(), image.to_path_buf());
        let fd = std::thread::spawn(move || {
            private_mount_namespace(&dir);
            // A child of this thread starts in its namespace.
            let out = Command::new("mount")
                .args(["-o", "loop,errors=remount-ro"])
                .arg(&image)
                .arg(&dir)
                .output()
                .unwrap();
            if !out.status.success() {
                eprintln!(
                    "skipped: no loop device for an ext4 image: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            Some(std::os::fd::OwnedFd::from(
                std::fs::File::open("/proc/thread-self/ns/mnt").unwrap(),
            ))
        })
        .join()
        .unwrap()?;
        Some(Self(std::sync::Arc::new(fd)))
    }

    /// Runs a program in this namespace; panics when it fails.
    pub fn run(&self, argv: &[&str]) {
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        self.put(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes `cmd` start in this namespace.
    pub fn put(&self, cmd: &mut Command) {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = self.0.as_raw_fd();
        // SAFETY: one setns between fork and exec, on an fd we hold.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Runs `f` on a thread in this namespace (where its file operations see the tmpfs).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let fd = self.0.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: this scoped thread's own fs attributes, then its mount namespace.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_FS) }, 0);
                assert_eq!(
                    unsafe { libc::setns(fd, libc::CLONE_NEWNS) },
                    0,
                    "setns: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap()
        })
    }
}

/// A running `hive-c0re serve` over its own state and run dirs.
pub struct TestHive {
    pub dir: tempfile::TempDir,
    pub opts: Opts,
    pub child: Option<Child>,
    /// Where the state dir is a tmpfs (`Opts::state_tmpfs`).
    pub mountns: Option<TestMountNs>,
    /// The daemon's controlling terminal (`Opts::tty`), held open.
    pub pty: Option<nix::pty::OpenptyResult>,
}

impl TestHive {
    /// Starts a hive with the process runtime, no manager, no dashboard.
    pub fn start() -> Self {
        Self::start_with(Opts::default())
    }

    /// Starts a hive with these options.
    pub fn start_with(opts: Opts) -> Self {
        let mut h = Self::new_with(opts);
        h.serve();
        h
    }

    /// A hive with these options in a fresh dir, not started yet ([`Self::serve`] starts it).
    pub fn new_with(opts: Opts) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hive-test-")
            .tempdir()
            .unwrap();
        // Agents of a root daemon run as their own uids and must reach their dirs below it.
        searchable(dir.path());
        let mountns = match (opts.state_tmpfs, opts.own_uid_registry) {
            (Some(_), true) => panic!("state_tmpfs and own_uid_registry do not go together"),
            (Some(bytes), false) => Some(TestMountNs::tmpfs(
                &dir.path().join("state"),
                bytes,
                opts.state_tmpfs_inodes,
            )),
            (None, true) if nix::unistd::Uid::effective().is_root() => Some(TestMountNs::tmpfs(
                Path::new(hive_c0re::runtime::uid_ranges::REGISTRY),
                1 << 20,
                None,
            )),
            (None, _) => None,
        };
        Self {
            dir,
            opts,
            child: None,
            mountns,
            pty: None,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Who this daemon is as node `node` of a shared store (`NODE#ID`, the
    /// id in its state dir): what a test writing its node row passes.
    pub fn holder(&self, node: &str) -> String {
        let id = std::fs::read_to_string(self.state_dir().join("node-id"))
            .expect("the daemon's node id");
        format!("{node}#{}", id.trim())
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn sock(&self) -> PathBuf {
        self.run_dir().join("host.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// A `hive-c0re` verb started with `input` written to its stdin, which
    /// is then closed; its stdout and stderr are piped.
    pub fn spawn_with_input(&self, args: &[&str], input: &str) -> Child {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child
    }

    /// A `hive-c0re` command with this hive's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hive-c0re"));
        c.env("HIVE_STATE_DIR", self.state_dir())
            .env("HIVE_RUN_DIR", self.run_dir())
            .env("HIVE_BIN_DIR", bin_dir())
            // This host's /etc/hyperhive/hive.toml is not the test's.
            .env("HIVE_CONFIG", "/dev/null")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
            .env_remove("ANTHROPIC_BASE_URL");
        for (k, v) in &self.opts.env {
            c.env(k, v);
        }
        c
    }

    /// (Re)starts the daemon and waits until it answers.
    /// Starts the daemon and waits until host.sock answers.
    pub fn serve(&mut self) {
        if let Err(st) = self.try_serve() {
            panic!("hive-c0re serve exited with {st}:\n{}", self.log());
        }
    }

    /// Starts the daemon and waits until host.sock answers; its exit status
    /// when it ended instead (its output is in [`Self::log`]).
    pub fn try_serve(&mut self) -> Result<(), std::process::ExitStatus> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = self.command();
        cmd.args(["serve", "--runtime", self.opts.runtime])
            .args(&self.opts.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(soft) = self.opts.nofile {
            use nix::sys::resource::{Resource, getrlimit, setrlimit};
            use std::os::unix::process::CommandExt;
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
            // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(move || {
                    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)
                });
            }
        }
        if self.opts.tty {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let pty = nix::pty::openpty(None, None).expect("a pty");
            let slave = pty.slave.as_raw_fd();
            // SAFETY: setsid and ioctl are async-signal-safe; the fd stays open in the parent.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            self.pty = Some(pty);
        }
        if let Some(ns) = &self.opts.netns {
            ns.put(&mut cmd);
        }
        if let Some(ns) = &self.mountns {
            ns.put(&mut cmd);
        }
        let child = cmd.spawn().expect("hive-c0re serve starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = UnixStream::connect(self.sock())
                && s.write_all(b"{\"cmd\":\"list\"}\n").is_ok()
            {
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).is_ok() && line.contains("\"ok\":true") {
                    return Ok(());
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(st);
            }
            assert!(
                Instant::now() < deadline,
                "hive-c0re did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's output so far, then each agent's harness log.
    pub fn log(&self) -> String {
        let mut out = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        if let Ok(dirs) = std::fs::read_dir(self.state_dir().join("agents")) {
            for d in dirs.flatten() {
                if let Ok(h) = std::fs::read_to_string(d.path().join("harness.log")) {
                    out.push_str(&format!(
                        "\n--- {} harness.log ---\n{h}",
                        d.file_name().to_string_lossy()
                    ));
                }
            }
        }
        out
    }

    /// kill -9 the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon and wait for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        c.wait().unwrap()
    }

    /// Runs a CLI verb and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a CLI verb that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "hive-c0re {args:?} failed ({}): {}{}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends one raw line on a fresh connection and returns the answer line.
    pub fn raw(&self, line: &str) -> String {
        let mut c = Conn::open(&self.sock());
        c.send(line);
        c.recv()
    }

    /// One JSON request, parsed answer.
    pub fn request(&self, v: serde_json::Value) -> serde_json::Value {
        serde_json::from_str(&self.raw(&v.to_string())).unwrap()
    }

    /// Waits until `f` holds, polling the status; panics with the log after `secs`.
    pub fn wait_for(&self, what: &str, secs: u64, mut f: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- daemon log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The status row of an agent.
    pub fn row(&self, name: &str) -> Option<serde_json::Value> {
        let v = self.request(serde_json::json!({"cmd": "agent_status"}));
        v["agent_statuses"]
            .as_array()?
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
    }
}

impl Drop for TestHive {
    fn drop(&mut self) {
        self.end_daemon();
        if self.opts.runtime == "nspawn" {
            remove_egress_table(&self.state_dir());
        }
    }
}

/// Removes the egress table of the hive whose state dir is `state`: its
/// daemon removes it when it stops, not when a test kills it, and the host
/// keeps what tests leave.
pub fn remove_egress_table(state: &Path) {
    let Some(nft) = which("nft") else { return };
    let table = hive_c0re::runtime::egress_table(state);
    let _ = Command::new(nft)
        .args(["delete", "table", "inet", &table])
        .stderr(Stdio::null())
        .status();
}

impl TestHive {
    /// Ends the daemon, if it runs: SIGTERM, then SIGKILL after 10 s.
    fn end_daemon(&mut self) {
        if let Some(c) = self.child.as_ref() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self
                    .child
                    .as_mut()
                    .unwrap()
                    .try_wait()
                    .ok()
                    .flatten()
                    .is_some()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.as_mut().unwrap().kill();
        }
    }
}

/// A raw host.sock connection.
pub struct Conn {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    pub fn open(path: &Path) -> Self {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    pub fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    /// Shuts down the sending side only: the answers still come.
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn recv(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    pub fn recv_json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.recv()).unwrap()
    }
}

/// The scripted model server, on a random loopback port.
pub struct ModelSim {
    pub child: Child,
    pub addr: String,
    /// The control token that `/_sim/*` requests carry.
    pub token: String,
    _dir: tempfile::TempDir,
}

impl ModelSim {
    /// Starts `hive-model-sim` with the built-in script, or `script` (TOML) when given.
    pub fn start(script: Option<&str>) -> Self {
        Self::start_in(script, None)
    }

    /// [`ModelSim::start`] in a network namespace (the host's when `None`).
    pub fn start_in(script: Option<&str>, netns: Option<&TestNetns>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("addr");
        let token_file = dir.path().join("token");
        let mut cmd = Command::new(bin_dir().join("hive-model-sim"));
        cmd.args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .arg("--control-token-file")
            .arg(&token_file);
        if let Some(s) = script {
            let f = dir.path().join("script.toml");
            std::fs::write(&f, s).unwrap();
            cmd.arg("--script").arg(f);
        }
        if let Some(ns) = netns {
            ns.put(&mut cmd);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("hive-model-sim starts (cargo build --workspace first)");
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&port_file)
                && !a.trim().is_empty()
            {
                break a.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "hive-model-sim did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Written before the port file.
        let token = std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_owned();
        Self {
            child,
            addr,
            token,
            _dir: dir,
        }
    }

    /// `ANTHROPIC_BASE_URL` for claude.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment a hive needs to run claude against this server.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("ANTHROPIC_BASE_URL".to_owned(), self.url()),
            ("ANTHROPIC_API_KEY".to_owned(), "sk-test".to_owned()),
        ];
        if let Some(c) = claude_bin() {
            env.push(("HIVE_CLAUDE_BIN".to_owned(), c.display().to_string()));
        }
        env
    }

    /// Every `/v1/messages` request recorded so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.control("GET", "/_sim/requests", "")).unwrap()
    }

    /// Replaces the script.
    pub fn set_script(&self, toml: &str) {
        self.control("POST", "/_sim/script", toml);
    }

    /// A `/_sim/*` control request with the token; returns the body.
    pub fn control(&self, method: &str, path: &str, body: &str) -> String {
        http_with(
            &self.addr,
            method,
            path,
            body,
            &[("x-sim-token", &self.token)],
        )
    }
}

impl Drop for ModelSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request; returns the body.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    http_with(addr, method, path, body, &[])
}

/// [`http`] with extra headers.
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    if out.contains("Transfer-Encoding: chunked") || out.contains("transfer-encoding: chunked") {
        dechunk(&body)
    } else {
        body
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// True when claude and the workspace binaries are there for end-to-end tests; prints why not.
pub fn e2e_ready() -> bool {
    if claude_bin().is_none() {
        eprintln!("skipped: no claude CLI (run scripts/deps.sh or set HIVE_CLAUDE_BIN)");
        return false;
    }
    for b in ["hive-ag3nt", "hive-m1nd", "hive-model-sim"] {
        if !bin_dir().join(b).exists() {
            eprintln!("skipped: {b} is not built (cargo build --workspace)");
            return false;
        }
    }
    true
}

impl TestHive {
    /// A hive whose agents run the real claude against `sim`.
    pub fn with_model(sim: &ModelSim, runtime: &'static str) -> Self {
        let mut opts = Opts {
            runtime,
            ..Opts::default()
        };
        opts.env = sim.env();
        Self::start_with(opts)
    }

    /// Waits for the operator's next messages (up to `secs`).
    pub fn recv_operator(&self, secs: u64) -> Vec<serde_json::Value> {
        let out = self.ok(&["recv", "--wait", &secs.to_string(), "--json"]);
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The operator's notifications of `kind`, newest first (of the last 100).
    pub fn notifications_of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.request(serde_json::json!({"cmd": "notifications", "limit": 100}))["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == kind)
            .cloned()
            .collect()
    }

    /// An agent's events, oldest first.
    pub fn events(&self, agent: &str) -> Vec<serde_json::Value> {
        let v = self.request(serde_json::json!({"cmd": "events", "agent": agent, "limit": 5000}));
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// Commits `agent.toml` into an agent's config repo and deploys it through an approval.
    pub fn deploy_config(&self, agent: &str, toml: &str) {
        let repo = self.state_dir().join("configs").join(agent);
        std::fs::write(repo.join("agent.toml"), toml).unwrap();
        let git = |args: &[&str]| git(&repo, args);
        git(&["commit", "-qam", "test config"]);
        let sha = git(&["rev-parse", "HEAD"]);
        let out = self.ok(&["request-apply-commit", agent, sha.trim()]);
        let id = out
            .trim()
            .trim_start_matches("approval #")
            .trim_end_matches(" queued")
            .to_owned();
        self.ok(&["approve", &id]);
    }
}

/// Makes `dest` an executable copy of `from`; see [`write_exe`] for why a child process writes it.
pub fn copy_exe(from: &Path, dest: &Path) {
    let st = Command::new("install")
        .args(["-m", "0755"])
        .arg(from)
        .arg(dest)
        .status()
        .expect("install runs");
    assert!(
        st.success(),
        "install {} {}: {st}",
        from.display(),
        dest.display()
    );
}

/// Makes `dest` an executable holding `text`, written by a child process.
///
/// Were this process to write it, its open write fd would be copied into any
/// child another test thread forks meanwhile (close-on-exec closes it only at
/// that child's exec, which can come late under load); running `dest` while a
/// writer is open anywhere fails with ETXTBSY ("Text file busy"). A child
/// process (`install`) writes it instead, and this process never holds a
/// writable fd of an executable.
pub fn write_exe(dest: &Path, text: &str) {
    let source = dest.with_extension("source");
    std::fs::write(&source, text).unwrap();
    copy_exe(&source, dest);
    std::fs::remove_file(&source).unwrap();
}

/// Lets other users pass through `dir` (not list it), as agents running as their own uids must.
pub fn searchable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The host pid of an agent's harness process (waits up to 30 s for one).
pub fn harness_pid(hive: &TestHive, agent: &str) -> nix::unistd::Pid {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(&pid) = harness_pids(hive, agent).first() {
            return nix::unistd::Pid::from_raw(pid);
        }
        assert!(Instant::now() < deadline, "no harness process for {agent}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Host pids of every harness process of `agent` (there must never be two): a
/// process-runtime harness names our run dir; a container's runs below its systemd-nspawn.
pub fn harness_pids(hive: &TestHive, agent: &str) -> Vec<i32> {
    agent_pids(hive, agent)
        .into_iter()
        .filter(|pid| {
            let cmd = String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
            .into_owned();
            cmd.contains("serve") && (cmd.contains("hive-ag3nt") || cmd.contains("hive-m1nd"))
        })
        .collect()
}

/// Host pids of every process that runs as `agent` of this hive: its
/// environment names the agent and, under the process runtime, our run dir;
/// in a container, it runs below the container's systemd-nspawn.
pub fn agent_pids(hive: &TestHive, agent: &str) -> Vec<i32> {
    let want = format!("HIVE_AGENT_NAME={agent}");
    let run = hive.run_dir().display().to_string();
    // The nspawn runtime records systemd-nspawn's pid; the harness runs below it.
    let container: Option<i32> =
        std::fs::read_to_string(hive.run_dir().join("agents").join(format!("{agent}.pid")))
            .ok()
            .filter(|t| t.contains("uid_base="))
            .and_then(|t| {
                t.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("pid=")?.parse().ok())
            });
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let env =
            String::from_utf8_lossy(&std::fs::read(e.path().join("environ")).unwrap_or_default())
                .into_owned();
        let ours = env.contains(&run) || container.is_some_and(|c| descends_from(pid, c));
        if env.split('\0').any(|kv| kv == want) && ours {
            out.push(pid);
        }
    }
    out
}

/// True when `ancestor` is `pid`'s parent, grandparent, ...
fn descends_from(mut pid: i32, ancestor: i32) -> bool {
    for _ in 0..64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The parent pid is the second field after the parenthesised command name.
        let Some(ppid) = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            return false;
        };
        if ppid == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        pid = ppid;
    }
    false
}

/// Runs git in `repo` as a test user; panics with git's stderr on failure; returns stdout.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        // Under nspawn a config repo belongs to the manager's uid range.
        .args(["-c", "safe.directory=*"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A bin dir whose harnesses do nothing (sleep), and the environment that
/// gives it to a hive: the test is then the agent's only speaker on its
/// agent.sock, as a program in its container would be. Keep the dir.
pub fn idle_harness() -> (tempfile::TempDir, Vec<(String, String)>) {
    let bin = tempfile::Builder::new()
        .prefix("hive-idle-bin-")
        .tempdir()
        .unwrap();
    searchable(bin.path());
    for harness in ["hive-ag3nt", "hive-m1nd"] {
        write_exe(&bin.path().join(harness), "#!/bin/sh\nexec sleep 600\n");
    }
    let env = vec![
        ("HIVE_BIN_DIR".into(), bin.path().display().to_string()),
        ("HIVE_CLAUDE_BIN".into(), "/bin/false".into()),
    ];
    (bin, env)
}

/// One request on an agent's own socket, as that agent (its harness, or a
/// hostile program in its container) would send it; the parsed answer.
pub fn agent_call(hive: &TestHive, agent: &str, req: serde_json::Value) -> serde_json::Value {
    let sock = hive.run_dir().join("agents").join(agent).join("agent.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "{agent}'s agent.sock never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = Conn::open(&sock);
    c.send(&req.to_string());
    c.recv_json()
}

/// Host pids of live (not zombie) processes whose argv is exactly `argv`.
pub fn pids_running(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want)
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    // The state follows the command's name, which may hold anything.
                    s.rsplit_once(')')
                        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
                })
        })
        .collect()
}

/// Moves the calling (short-lived) thread into a mount namespace of its own
/// from which nothing propagates to the host's, and makes `dir` there.
fn private_mount_namespace(dir: &Path) {
    use nix::mount::{MsFlags, mount};
    // SAFETY: unshare of this short-lived thread's mount namespace (and fs attributes) only.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNS) },
        0,
        "unshare: {}",
        std::io::Error::last_os_error()
    );
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
}

/// The database alarm the dashboard at `address` (`http://HOST:PORT/`)
/// serves to the holder of `token` (`null` when there is none).
pub fn database_alarm_at(address: &str, token: &str) -> serde_json::Value {
    let authority = address.trim_start_matches("http://").trim_end_matches('/');
    let body = http_with(
        authority,
        "GET",
        "/api/database",
        "",
        &[("X-Hive-Token", token)],
    );
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["alarm"].clone()
}
