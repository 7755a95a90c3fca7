//! The configuration file: its serde shape, how it is loaded (file + `FUSEGATE_` environment)
//! and how it is validated.
//!
//! This module owns the user-facing key names and defaults of SPEC §2. It does not build
//! anything that serves traffic: [`crate::runtime`] turns a validated [`Config`] into the
//! route table.

mod load;
mod problem;
mod types;
mod units;
mod upstream;
mod validate;

pub use load::{load, load_from_str, Format};
pub use problem::{ConfigErrors, ConfigProblem};
pub use types::*;
pub use units::{parse_duration, parse_size, ByteSize, Dur};
pub use upstream::{UpstreamAddr, UpstreamScheme};
pub use validate::{valid_route_name, validate};

/// Default config path, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/fusegate.toml";
