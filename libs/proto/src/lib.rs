//! The one crate that compiles wamesh's protobuf contracts (`proto/`): every service and client
//! uses these types, so they are compatible by construction. Re-exports `tonic` and `prost`, and
//! the encoded descriptor set for gRPC reflection.
#![forbid(unsafe_code)]
#![allow(clippy::all, clippy::pedantic)]

pub use prost;
pub use tonic;

/// Every file of `proto/`, encoded, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wamesh_descriptor");

/// `wamesh.analytics.v1`: rollups, overviews, alerts and export.
pub mod analytics {
    pub mod v1 {
        tonic::include_proto!("wamesh.analytics.v1");
    }
}

/// `wamesh.messaging.v1`: webhook ingest and the message store.
pub mod messaging {
    pub mod v1 {
        tonic::include_proto!("wamesh.messaging.v1");
    }
}

/// `wamesh.ratelimit.v1`: token buckets and distinct windows for WhatsApp's limits.
pub mod ratelimit {
    pub mod v1 {
        tonic::include_proto!("wamesh.ratelimit.v1");
    }
}
