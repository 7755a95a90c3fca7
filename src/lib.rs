//! fusegate: a circuit-breaking reverse-proxy gateway built on pingora.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod config;
