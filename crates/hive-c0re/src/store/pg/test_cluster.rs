//! A throwaway PostgreSQL cluster for tests and benchmarks: made with
//! `initdb` in a temp dir (as the `postgres` user when run as root, which
//! initdb refuses), listening on 127.0.0.1 and a free port only (or, for
//! tests of several hosts, in a network namespace of the test's: see
//! [`Network`]), with its unix socket in that dir, TLS with a CA of its own,
//! and password logins.
//!
//! A watchdog shell owns the server: it stops it and removes the dir as soon
//! as its stdin closes, which happens on Drop and also when the process that
//! started it ends in any way (a panic, a static never dropped, kill -9).
//! [`TestCluster::shared`] starts one lazily per process; each test then
//! takes a fresh database with [`TestCluster::database`].

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::unistd::{Gid, Uid, User};

use super::settings::PgSettings;

/// The role tests log in as: it owns their databases, and is no superuser.
pub const OWNER: &str = "hive_owner";

/// A running throwaway cluster; stopped and removed when dropped.
pub struct TestCluster {
    dir: PathBuf,
    port: u16,
    password: String,
    watchdog: Child,
    /// The watchdog's stdin: closing it stops the cluster.
    lifeline: Option<std::process::ChildStdin>,
    next_db: AtomicU32,
}

/// Where a cluster listens besides its unix socket (which the test's own
/// connections use, so they reach it in any network namespace).
#[derive(Default)]
pub struct Network<'a> {
    /// `listen_addresses`; 127.0.0.1 when None.
    pub listen: Option<&'a str>,
    /// A network whose clients may log in over TCP besides loopback (`10.80.0.0/16`).
    pub clients: Option<&'a str>,
    /// Called on the server's command before it starts: to put it in a network namespace.
    pub prepare: Option<&'a dyn Fn(&mut Command)>,
}

static SHARED: LazyLock<Result<TestCluster, String>> =
    LazyLock::new(|| TestCluster::start(false).map_err(|e| e.to_string()));

impl TestCluster {
    /// True, with a note on stderr, when no PostgreSQL server is installed:
    /// a test on PostgreSQL then skips itself (scripts/deps.sh installs one
    /// for CI). A server that is installed but fails to start still fails
    /// the test.
    pub fn missing() -> bool {
        match bin_dir() {
            Ok(_) => false,
            Err(e) => {
                eprintln!("skipped, PostgreSQL is not installed: {e}");
                true
            }
        }
    }

    /// The process's cluster (fsync off), started on first use.
    pub fn shared() -> &'static TestCluster {
        match &*SHARED {
            Ok(c) => c,
            Err(e) => panic!("could not start a throwaway PostgreSQL cluster: {e}"),
        }
    }

    /// Starts a cluster; `durable` keeps PostgreSQL's fsync and synchronous commit (for benchmarks).
    pub fn start(durable: bool) -> io::Result<Self> {
        Self::start_on(durable, &Network::default())
    }

    /// Starts a cluster reached as `net` says.
    pub fn start_on(durable: bool, net: &Network<'_>) -> io::Result<Self> {
        let bin = bin_dir()?;
        let owner = run_as()?;
        let dir = std::env::temp_dir().join(format!(
            "hive-pg-{}-{}",
            std::process::id(),
            crate::hex::random(6)?
        ));
        std::fs::create_dir(&dir)?;
        let started = Self::start_in(&dir, &bin, owner, durable, net);
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(
        dir: &Path,
        bin: &Path,
        owner: Option<(Uid, Gid)>,
        durable: bool,
        net: &Network<'_>,
    ) -> io::Result<Self> {
        let password = crate::hex::random(16)?;
        let chown = |p: &Path| -> io::Result<()> {
            if let Some((u, g)) = owner {
                nix::unistd::chown(p, Some(u), Some(g)).map_err(io::Error::from)?;
            }
            Ok(())
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        chown(dir)?;
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        chown(&pwfile)?;
        make_certs(dir)?;
        chown(&dir.join("server.key"))?;

        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .args(["--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(&data)
            .current_dir(dir);
        if let Some((u, g)) = owner {
            initdb.uid(u.as_raw()).gid(g.as_raw());
        }
        let out = initdb.output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }

        if let Some(clients) = net.clients {
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))?;
            writeln!(hba, "host all all {clients} scram-sha-256")?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut server: Vec<String> = vec![bin.join("postgres").display().to_string()];
        let mut set = |k: &str, v: &str| {
            server.push("-c".into());
            server.push(format!("{k}={v}"));
        };
        set("listen_addresses", net.listen.unwrap_or("127.0.0.1"));
        set("port", &port.to_string());
        set("unix_socket_directories", &dir.display().to_string());
        set("max_connections", "300");
        set("shared_buffers", "32MB");
        set("ssl", "on");
        set(
            "ssl_cert_file",
            &dir.join("server.pem").display().to_string(),
        );
        set(
            "ssl_key_file",
            &dir.join("server.key").display().to_string(),
        );
        if !durable {
            set("fsync", "off");
            set("synchronous_commit", "off");
            set("full_page_writes", "off");
        }
        server.push("-D".into());
        server.push(data.display().to_string());
        let mut argv = vec![];
        if let Some((u, g)) = owner {
            argv.extend([
                "setpriv".to_owned(),
                format!("--reuid={}", u.as_raw()),
                format!("--regid={}", g.as_raw()),
                "--clear-groups".to_owned(),
                "--".to_owned(),
            ]);
        }
        argv.extend(server);
        // The watchdog starts the server, waits for its stdin to close, then
        // stops the server (fast shutdown) and removes the whole dir.
        let mut watchdog = Command::new("/bin/sh");
        if let Some(prepare) = net.prepare {
            prepare(&mut watchdog);
        }
        let mut watchdog = watchdog
            .arg("-c")
            .arg(
                r#"trap '' INT TERM HUP
"$@" 2>"$HIVE_PG_DIR/server.log" &
pg=$!
read _ignored || true
kill -INT "$pg" 2>/dev/null
wait "$pg"
rm -rf "$HIVE_PG_DIR""#,
            )
            .arg("sh")
            .args(&argv)
            .env("HIVE_PG_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a ^C to the test run must not stop it before it cleans up.
            .process_group(0)
            .spawn()?;
        let lifeline = watchdog.stdin.take();
        let cluster = Self {
            dir: dir.to_owned(),
            port,
            password,
            watchdog,
            lifeline,
            next_db: AtomicU32::new(0),
        };
        cluster.wait_ready(&data)?;
        Ok(cluster)
    }

    /// Waits until the postmaster says it accepts connections.
    fn wait_ready(&self, data: &Path) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if pid_file.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                return Ok(());
            }
            let log = || std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "PostgreSQL did not start within 60 s: {}",
                    log()
                )));
            }
            if log().contains("FATAL") {
                return Err(io::Error::other(format!(
                    "PostgreSQL did not start: {}",
                    log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate the server's certificate (for `localhost`) is signed by.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Settings to reach `database` as [`OWNER`] over TCP (no TLS: tests need no encryption on loopback).
    pub fn settings(&self, database: &str) -> PgSettings {
        let mut s = PgSettings::new(self.url_at("127.0.0.1", database));
        s.password = Some(self.password.clone());
        s
    }

    /// The URL (without the password, see [`Self::password`]) of `database` as [`OWNER`] at `host`, without TLS.
    pub fn url_at(&self, host: &str, database: &str) -> String {
        format!(
            "postgres://{OWNER}@{host}:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// The password of every role the cluster's tests log in as.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A superuser connection to the `postgres` database, for set-up and for tests that break things.
    pub async fn admin(&self) -> tokio_postgres::Client {
        self.connect_as("postgres", "postgres").await
    }

    /// A plain connection as `user` (its password is the cluster's) to `database`.
    pub async fn connect_as(&self, user: &str, database: &str) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.dir)
            .port(self.port)
            .user(user)
            .password(&self.password)
            .dbname(database);
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("could not connect to the test cluster as {user}: {e}"));
        tokio::spawn(conn);
        client
    }

    /// Creates a fresh empty database owned by [`OWNER`]; returns its name.
    pub async fn database(&self) -> String {
        let admin = self.admin().await;
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("hive_test_{}_{n}", std::process::id());
        // Roles are cluster-wide: made once, by whichever test comes first.
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN
                     CREATE ROLE {OWNER} LOGIN PASSWORD '{pw}';
                   END IF;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END $$;",
                pw = self.password
            ))
            .await
            .and(
                admin
                    .batch_execute(&format!(
                        "CREATE DATABASE {name} OWNER {OWNER} TEMPLATE template0"
                    ))
                    .await,
            )
            .unwrap_or_else(|e| {
                panic!("could not create a test database: {}", super::describe(&e))
            });
        name
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // EOF on the watchdog's stdin: it stops the server and removes the dir.
        drop(self.lifeline.take());
        let _ = self.watchdog.wait();
    }
}

/// The newest PostgreSQL server Debian installed (`/usr/lib/postgresql/<version>/bin`).
fn bin_dir() -> io::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::other(
            "no PostgreSQL server in /usr/lib/postgresql/*/bin: run scripts/deps.sh (Debian's postgresql package)",
        )
    })
}

/// Who runs the server: `postgres` when we are root (initdb refuses root), else ourselves.
fn run_as() -> io::Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .map_err(io::Error::from)?
        .ok_or_else(|| io::Error::other("there is no postgres user: run scripts/deps.sh"))?;
    Ok(Some((user.uid, user.gid)))
}

/// A CA and a server certificate for `localhost` signed by it (P-256 keys: quick to make).
fn make_certs(dir: &Path) -> io::Result<()> {
    let mut ext = std::fs::File::create(dir.join("server.ext"))?;
    writeln!(
        ext,
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth"
    )?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "7"],
        ]
        .concat()
        .into_iter()
        .chain([
            "-subj",
            "/CN=hive test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .collect(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "7",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .map_err(|e| {
                io::Error::other(format!("could not run openssl ({e}): run scripts/deps.sh"))
            })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "openssl {} failed: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    Ok(())
}
