//! fusegate: a circuit-breaking reverse-proxy gateway built on pingora.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access_log;
pub mod admin;
pub mod background;
pub mod breaker;
pub mod by_route;
pub mod cache;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctl;
pub mod dashboard;
pub mod demo;
pub mod forwarded;
pub mod gateway;
pub mod health;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod server;
pub mod status;
pub mod tls;
