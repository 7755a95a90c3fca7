//! Responses the gateway makes itself: JSON bodies with `Content-Type` and `X-Request-Id`.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Writes a complete JSON response.
pub async fn json(
    session: &mut Session,
    status: u16,
    body: String,
    request_id: Option<&HeaderValue>,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    if let Some(id) = request_id {
        h.insert_header("x-request-id", id.clone())?;
    }
    for (name, value) in extra {
        h.insert_header(*name, value.as_str())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// `{"error":<error>,"route":<route>}`; route names need no escaping.
pub fn error_body(error: &str, route: &str) -> String {
    format!(r#"{{"error":"{error}","route":"{route}"}}"#)
}

/// `{"error":<error>,"path":<path>}`, with the path JSON-escaped.
pub fn path_error_body(error: &str, path: &str) -> String {
    let path = serde_json::to_string(path).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"error":"{error}","path":{path}}}"#)
}

/// The breaker's 503: `circuit_open` with `Retry-After`, or `route_paused`.
pub async fn rejection(
    session: &mut Session,
    route: &str,
    rejection: crate::breaker::Rejection,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    use crate::breaker::State;
    let state = rejection.state.as_str();
    let mut headers = vec![("x-fusegate-breaker", state.to_string())];
    let body = match (rejection.state, rejection.retry_after_secs) {
        (State::ForcedOpen, _) => {
            format!(r#"{{"error":"route_paused","route":"{route}","state":"{state}"}}"#)
        }
        (_, secs) => {
            let secs = secs.unwrap_or(1);
            headers.push(("retry-after", secs.to_string()));
            format!(
                r#"{{"error":"circuit_open","route":"{route}","state":"{state}","retry_after_secs":{secs}}}"#
            )
        }
    };
    json(session, 503, body, request_id, &headers).await
}

/// A route's static fallback, in place of the breaker's 503: `X-Fusegate-Fallback:
/// static` and the breaker state that turned the request away.
pub async fn fallback(
    session: &mut Session,
    fallback: &crate::runtime::Fallback,
    state: crate::breaker::State,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let crate::runtime::Fallback::Static {
        status,
        content_type,
        body,
    } = fallback
    else {
        return Err(Error::explain(InternalError, "not a static fallback"));
    };
    let mut h = ResponseHeader::build(*status, Some(5))?;
    let bodiless = matches!(status, 100..=199 | 204 | 304);
    h.insert_header("content-type", content_type.clone())?;
    if !bodiless {
        h.insert_header("content-length", body.len().to_string())?;
    }
    if let Some(id) = request_id {
        h.insert_header("x-request-id", id.clone())?;
    }
    h.insert_header("x-fusegate-fallback", "static")?;
    h.insert_header("x-fusegate-breaker", state.as_str())?;
    let head_only = bodiless || session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(body.clone()), true)
            .await?;
    }
    Ok(())
}
