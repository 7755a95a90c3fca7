//! Translating what pingora reports about a failed request into breaker outcomes and
//! gateway responses.

use crate::breaker::FailureKind;
use pingora::{Error, ErrorSource, ErrorType};

/// What became of a request that failed with a pingora error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFailure {
    /// The upstream failed: a breaker outcome, and a 502 or 504.
    Upstream(FailureKind),
    /// The client went away, stalled or sent something broken: not a breaker outcome.
    Downstream(ClientFault),
    /// Something inside the gateway: not a breaker outcome, a 500.
    Internal,
}

/// What the client did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The connection is gone: nobody to answer.
    Gone,
    /// The request body stopped arriving for `server.body_timeout`.
    Stalled,
    /// The request body passed `server.max_body_bytes`.
    BodyTooLarge,
    /// Anything else the client sent that pingora refused.
    Malformed,
}

impl ClientFault {
    /// The `fusegate_client_errors_total` reason, for what a client limit or a client's
    /// leaving cut short (a malformed request is answered 400 and not counted there).
    pub fn client_error(self) -> Option<crate::metrics::ClientError> {
        use crate::metrics::ClientError;
        match self {
            ClientFault::Gone => Some(ClientError::Aborted),
            ClientFault::Stalled => Some(ClientError::BodyTimeout),
            ClientFault::BodyTooLarge => Some(ClientError::BodyTooLarge),
            ClientFault::Malformed => None,
        }
    }
}

/// The error that stops a request whose streamed body has passed `max` bytes.
pub fn body_too_large(max: u64) -> Box<Error> {
    Error::explain(
        ErrorType::HTTPStatus(413),
        format!("request body larger than server.max_body_bytes ({max} bytes)"),
    )
    .into_down()
}

/// The marker of a fallback upstream answering with one of the route's failure statuses.
pub const FALLBACK_FAILED: &str = "fallback-failed";

/// The error that turns a failing fallback upstream's answer into the 503 contract.
pub fn fallback_failed(status: u16) -> Box<Error> {
    Error::create(
        ErrorType::Custom(FALLBACK_FAILED),
        ErrorSource::Upstream,
        Some(format!("fallback upstream answered {status}").into()),
        None,
    )
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
        ErrorSource::Downstream => ProxyFailure::Downstream(match etype {
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => {
                ClientFault::Gone
            }
            ErrorType::ReadTimedout => ClientFault::Stalled,
            ErrorType::HTTPStatus(413) => ClientFault::BodyTooLarge,
            _ => ClientFault::Malformed,
        }),
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
            ProxyFailure::Downstream(ClientFault::Gone) => None,
            ProxyFailure::Downstream(ClientFault::Stalled) => Some((408, "request_timeout")),
            ProxyFailure::Downstream(ClientFault::BodyTooLarge) => Some((413, "body_too_large")),
            ProxyFailure::Downstream(ClientFault::Malformed) => Some((400, "bad_request")),
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
        assert_eq!(
            classify(&ErrorType::ReadTimedout, &down, false).response(),
            Some((408, "request_timeout"))
        );
        let too_large = body_too_large(10);
        assert_eq!(
            classify(too_large.etype(), too_large.esource(), false).response(),
            Some((413, "body_too_large"))
        );
    }
}
