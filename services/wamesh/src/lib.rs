//! The `wamesh` binary's library: the command line ([`cli`]), what each command runs ([`run`]),
//! the in-process mesh that `wamesh dev`, benchmarks and black-box tests all start the same way
//! ([`mesh`]), the benchmarks ([`bench`]), `wamesh send` ([`send`]) and an OTLP sink ([`otlp_sink`]).
#![forbid(unsafe_code)]

mod admin;
pub mod bench;
pub mod cli;
pub mod mesh;
pub mod otlp_sink;
pub mod run;
pub mod send;
