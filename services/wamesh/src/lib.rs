//! The `wamesh` binary's library: the command line ([`cli`]), what each command runs ([`run`]),
//! the in-process mesh that `wamesh dev`, benchmarks and black-box tests all start the same way
//! ([`mesh`]), and the benchmarks ([`bench`]).
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod mesh;
pub mod run;
