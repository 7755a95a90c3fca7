//! fusegate: a circuit-breaking reverse-proxy gateway built on pingora.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod config;
pub mod router;
pub mod clock;
pub mod runtime;
pub mod gateway;
pub mod proxy;
pub mod demo;
pub mod logging;
pub mod server;
