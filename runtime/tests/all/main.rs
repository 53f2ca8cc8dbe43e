//! skiff's integration tests: one binary, one module per area, against real parts (the real
//! `skiff` binary, real wasmtime, samples built from source, real HTTP clients over loopback).
//!
//! Samples must be built first: `bash samples/build.sh` (the README's test command does it).

mod cache;
mod cli;
mod control;
mod crash;
mod daemon;
mod errors;
mod fs;
mod gateway;
mod http;
mod layout;
mod limits;
mod linux;
mod observe;
mod oci;
mod oci_runtime;
mod outbound;
mod registry;
mod run;
mod scaling;
mod services;
mod serving;
mod support;
mod unpack;
