//! The lost answer (the drop rate): the send was read, accepted and recorded, and its statuses
//! follow, but the client gets no answer at all, as when Meta's answer is lost on the way.
//!
//! How: the response's body fails on its first poll. hyper polls the body before it flushes
//! the response head, so on that error it closes the connection without writing a byte: the
//! client sees its request answered by a closed connection (reqwest: "connection closed before
//! message completed"), never a status line. The sender must treat such a send as in doubt.
use axum::body::{Body, Bytes};
use axum::response::Response;

/// A response that closes the connection before anything is written.
pub fn answer() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other(
            "the simulator drops this answer on purpose (its drop rate)",
        ))
    });
    Response::new(Body::from_stream(failing))
}
