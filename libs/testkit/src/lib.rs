//! Test support shared by wamesh's test suites (a dev-dependency only): a fresh Postgres
//! database or SQLite file per test, a fresh Redis key prefix, the shared webhook corpus, and a
//! strict parser of Prometheus' text format ([`prometheus`]).
//!
//! Postgres is found at `WAMESH_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets a database of its own named
//! `wamesh_test_<random>`, which `scripts/test.sh` drops before the next run.
#![forbid(unsafe_code)]

pub mod prometheus;

use std::path::PathBuf;

use sqlx::Connection;

/// The server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("WAMESH_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A URL to a brand-new, empty Postgres database.
pub async fn fresh_postgres_url() -> String {
    let admin = postgres_admin_url();
    let name = format!("wamesh_test_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("Postgres at {admin} is needed for this test: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, _) = admin
        .rsplit_once('/')
        .expect("a database URL ends with /<database>");
    format!("{base}/{name}")
}

/// Runs one admin statement (for tests that take a database away and give it back).
pub async fn postgres_admin(sql: String) {
    let mut conn = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("admin statement");
}

/// The database name at the end of a Postgres URL.
pub fn database_name(url: &str) -> &str {
    url.rsplit_once('/').map_or(url, |(_, name)| name)
}

/// The Redis tests use: `WAMESH_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    std::env::var("WAMESH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses (tests share one Redis; keys are namespaced, never flushed).
pub fn fresh_redis_prefix() -> String {
    format!("wamesh-test:{:016x}:", rand::random::<u64>())
}

/// A URL to a new SQLite file in the temp directory.
pub fn fresh_sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("wamesh-test-{:016x}.db", rand::random::<u64>()));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The shared webhook corpus: `(file name, body)` for every payload, sorted by name.
/// `WAMESH_CORPUS_DIR` overrides where it is; otherwise it is `../shared/corpus/webhooks/pywa`
/// from the repository root, found from the test's working directory (its crate's folder).
/// Not from `CARGO_MANIFEST_DIR`: a build cache shared by several clones may hand this crate,
/// compiled in another clone, to this one.
pub fn webhook_corpus() -> Vec<(String, Vec<u8>)> {
    const CORPUS: &str = "shared/corpus/webhooks/pywa";
    let dir = std::env::var("WAMESH_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let cwd = std::env::current_dir().expect("a working directory");
            cwd.ancestors()
                .map(|dir| dir.join(CORPUS))
                .find(|dir| dir.is_dir())
                .unwrap_or_else(|| {
                    panic!("no {CORPUS} above {}: set WAMESH_CORPUS_DIR", cwd.display())
                })
        });
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the webhook corpus at {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let body = std::fs::read(&p).expect("corpus file");
            (name, body)
        })
        .collect()
}

/// A Redis server of the test's own (`redis-server` from PATH, nothing kept on disk), for tests
/// that stop, slow down or restart Redis: the shared one must stay up for every other test.
/// Killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it at once (SIGKILL): everything it held is gone, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (killing it first if it runs), empty.
    pub fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test (scripts/test.sh checks it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        );
    }

    /// Sends one command in Redis' inline form and answers its first reply line.
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        use std::io::{BufRead, Write};
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        (&stream).write_all(format!("{line}\r\n").as_bytes())?;
        let mut reply = String::new();
        std::io::BufReader::new(&stream).read_line(&mut reply)?;
        Ok(reply.trim_end().to_owned())
    }

    fn ping(&self) -> bool {
        self.command("PING").is_ok_and(|r| r == "+PONG")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
