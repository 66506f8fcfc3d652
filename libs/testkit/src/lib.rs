//! Test support shared by wamesh's test suites (a dev-dependency only): a fresh Postgres
//! database or SQLite file per test, and the shared webhook corpus.
//!
//! Postgres is found at `WAMESH_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets a database of its own named
//! `wamesh_test_<random>`, which `scripts/test.sh` drops before the next run.
#![forbid(unsafe_code)]

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

/// A URL to a new SQLite file in the temp directory.
pub fn fresh_sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("wamesh-test-{:016x}.db", rand::random::<u64>()));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The shared webhook corpus: `(file name, body)` for every payload, sorted by name.
/// `WAMESH_CORPUS_DIR` overrides where it is (default: `../shared/corpus/webhooks/pywa` from
/// the repository root).
pub fn webhook_corpus() -> Vec<(String, Vec<u8>)> {
    let dir = std::env::var("WAMESH_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/webhooks/pywa")
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
