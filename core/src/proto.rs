//! Generated protobuf messages and tonic services of `proto/quiver.proto`.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/quiver.v1.rs"));
