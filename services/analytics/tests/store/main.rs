//! The store conformance suite: every test is an `async fn(Arc<dyn Store>)` run against BOTH
//! backends (Postgres and SQLite), each on a fresh database of its own.
use std::sync::Arc;

use wamesh_analytics::store::{self, Store};

async fn open_pg() -> Arc<dyn Store> {
    let url = wamesh_testkit::fresh_postgres_url().await;
    store::open(&url, 4).await.expect("open the Postgres store")
}

async fn open_sqlite() -> Arc<dyn Store> {
    store::open(&wamesh_testkit::fresh_sqlite_url(), 4)
        .await
        .expect("open the SQLite store")
}

/// Generates `mod postgres` and `mod sqlite`, each with one `#[tokio::test]` per suite test
/// (each checks first that it got the backend it is named after).
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        conformance!(@backend postgres, open_pg, "postgres"; $($name),*);
        conformance!(@backend sqlite, open_sqlite, "sqlite"; $($name),*);
    };
    (@backend $module:ident, $open:ident, $backend:literal; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    let store = crate::$open().await;
                    assert_eq!(store.backend(), $backend);
                    super::$name(store).await
                }
            )*
        }
    };
}

mod alerts;
mod api;
mod peaks;
mod rollups;
