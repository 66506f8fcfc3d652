//! Upgrading a database written by an older messaging: what it stored is still readable after
//! the newer migrations ran. Each test migrates a fresh database only up to a version, writes
//! rows the way that version did, then opens the store (which runs every migration).
use std::borrow::Cow;

use sqlx::migrate::Migrator;
use wamesh_messaging::store;

static PG: Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// `all` without the migrations from `version` on.
fn before(all: &Migrator, version: i64) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

/// The delivery log before bodies moved into it: two deliveries sharing one body row.
const OLD_ROWS: [&str; 3] = [
    "INSERT INTO webhook_bodies (sha256, body, first_seen_ms) VALUES ('abc', 'the raw body', 1)",
    "INSERT INTO webhook_deliveries (id, body_sha256, received_at_ms, stored_at_ms, size_bytes, duplicate_body,
         verified_by, messages, statuses, contacts, errors, other_fields, new_messages, new_statuses)
     VALUES (1, 'abc', 1, 2, 12, false, 'default', 1, 0, 1, 0, 0, 1, 0)",
    "INSERT INTO webhook_deliveries (id, body_sha256, received_at_ms, stored_at_ms, size_bytes, duplicate_body,
         verified_by, messages, statuses, contacts, errors, other_fields, new_messages, new_statuses)
     VALUES (2, 'abc', 3, 4, 12, true, 'default', 1, 0, 1, 0, 0, 0, 0)",
];

async fn check_bodies_moved_into_the_log(url: &str) {
    let store = store::open(url, 2)
        .await
        .expect("open runs the newer migrations");
    for (id, duplicate) in [(1, false), (2, true)] {
        let delivery = store
            .get_delivery(id)
            .await
            .expect("get_delivery")
            .expect("still logged");
        assert_eq!(delivery.body, b"the raw body", "delivery {id} has its body");
        assert_eq!(delivery.body_sha256, "abc");
        assert_eq!(delivery.duplicate, duplicate, "delivery {id}");
        assert_eq!(delivery.new_events, 0);
    }
}

#[tokio::test]
async fn postgres_bodies_move_into_the_delivery_log() {
    let url = wamesh_testkit::fresh_postgres_url().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    before(&PG, 5).run(&pool).await.expect("migrations 1-4");
    for sql in OLD_ROWS {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    pool.close().await;
    check_bodies_moved_into_the_log(&url).await;
}

#[tokio::test]
async fn sqlite_bodies_move_into_the_delivery_log() {
    let url = wamesh_testkit::fresh_sqlite_url();
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    before(&SQLITE, 2).run(&pool).await.expect("migration 1");
    for sql in OLD_ROWS {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    pool.close().await;
    check_bodies_moved_into_the_log(&url).await;
}
