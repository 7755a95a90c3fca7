//! Translating what pingora reports about a failed request into breaker outcomes and
//! gateway responses.

use crate::breaker::FailureKind;
use pingora::{ErrorSource, ErrorType};

/// What became of a request that failed with a pingora error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFailure {
    /// The upstream failed: a breaker outcome, and a 502 or 504.
    Upstream(FailureKind),
    /// The client went away or sent something broken: not a breaker outcome.
    Downstream { connection_dead: bool },
    /// Something inside the gateway: not a breaker outcome, a 500.
    Internal,
}

/// Classifies an error. `connect_failed` is set when pingora reported it through
/// `fail_to_connect`, i.e. nothing reached the upstream.
pub fn classify(etype: &ErrorType, source: &ErrorSource, connect_failed: bool) -> ProxyFailure {
    if connect_failed {
        return ProxyFailure::Upstream(FailureKind::Connect);
    }
    match source {
        ErrorSource::Upstream => ProxyFailure::Upstream(match etype {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => FailureKind::Timeout,
            ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert => FailureKind::Connect,
            _ => FailureKind::Reset,
        }),
        ErrorSource::Downstream => ProxyFailure::Downstream {
            connection_dead: matches!(
                etype,
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
            ),
        },
        ErrorSource::Internal | ErrorSource::Unset => ProxyFailure::Internal,
    }
}

impl ProxyFailure {
    /// Status and `error` code of the gateway's response; `None` when nobody is left to
    /// answer.
    pub fn response(self) -> Option<(u16, &'static str)> {
        match self {
            ProxyFailure::Upstream(FailureKind::Timeout) => Some((504, "upstream_timeout")),
            ProxyFailure::Upstream(FailureKind::Connect) => Some((502, "upstream_unavailable")),
            ProxyFailure::Upstream(_) => Some((502, "upstream_error")),
            ProxyFailure::Downstream {
                connection_dead: true,
            } => None,
            ProxyFailure::Downstream { .. } => Some((400, "bad_request")),
            ProxyFailure::Internal => Some((500, "internal_error")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_map_to_the_spec_statuses() {
        let up = ErrorSource::Upstream;
        assert_eq!(
            classify(&ErrorType::ConnectRefused, &up, true).response(),
            Some((502, "upstream_unavailable"))
        );
        assert_eq!(
            classify(&ErrorType::ReadTimedout, &up, false).response(),
            Some((504, "upstream_timeout"))
        );
        assert_eq!(
            classify(&ErrorType::ConnectionClosed, &up, false),
            ProxyFailure::Upstream(FailureKind::Reset)
        );
    }

    #[test]
    fn client_errors_are_not_upstream_failures() {
        let down = ErrorSource::Downstream;
        assert_eq!(
            classify(&ErrorType::WriteError, &down, false).response(),
            None
        );
        assert_eq!(
            classify(&ErrorType::InvalidHTTPHeader, &down, false).response(),
            Some((400, "bad_request"))
        );
    }
}
