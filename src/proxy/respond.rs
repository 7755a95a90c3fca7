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
    let extra = extra.iter().map(|(name, value)| (*name, value.as_str()));
    if super::grpc::is_grpc(&session.req_header().headers) {
        return grpc_error(session, status, &body, request_id, extra).await;
    }
    let content_type = HeaderValue::from_static("application/json");
    send(
        session,
        status,
        content_type,
        Bytes::from(body),
        request_id,
        extra,
    )
    .await
}

/// Writes a complete response: `Content-Type`, `Content-Length` (none for a status that
/// has no body), `X-Request-Id` and `extra`; no body to a `HEAD`.
async fn send<'a>(
    session: &mut Session,
    status: u16,
    content_type: HeaderValue,
    body: Bytes,
    request_id: Option<&HeaderValue>,
    extra: impl ExactSizeIterator<Item = (&'static str, &'a str)>,
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(3 + extra.len()))?;
    let bodiless = matches!(status, 100..=199 | 204 | 304);
    h.insert_header("content-type", content_type)?;
    if !bodiless {
        h.insert_header("content-length", body.len().to_string())?;
    }
    if let Some(id) = request_id {
        h.insert_header("x-request-id", id.clone())?;
    }
    for (name, value) in extra {
        h.insert_header(name, value)?;
    }
    let head_only = bodiless || session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The gRPC form of a gateway answer (SPEC §12): HTTP 200, trailers-only, with the
/// `grpc-status` standing for `status` and a `grpc-message` made from the JSON `body`;
/// `X-Request-Id` and `extra` (`Retry-After`, `X-Fusegate-Breaker`) are kept.
async fn grpc_error<'a>(
    session: &mut Session,
    status: u16,
    body: &str,
    request_id: Option<&HeaderValue>,
    extra: impl ExactSizeIterator<Item = (&'static str, &'a str)>,
) -> Result<()> {
    use super::grpc;
    let mut h = ResponseHeader::build(200, Some(5 + extra.len()))?;
    h.insert_header("content-type", "application/grpc")?;
    h.insert_header("grpc-status", grpc::code_for(status).to_string())?;
    h.insert_header(
        "grpc-message",
        grpc::encode_message(&grpc::message_for(body)),
    )?;
    if !session.is_http2() {
        // HTTP/1.1 has no trailers-only form: an empty body ends the answer.
        h.insert_header("content-length", "0")?;
    }
    if let Some(id) = request_id {
        h.insert_header("x-request-id", id.clone())?;
    }
    for (name, value) in extra {
        h.insert_header(name, value)?;
    }
    session.write_response_header(Box::new(h), true).await
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
pub async fn static_fallback(
    session: &mut Session,
    (status, content_type, body): (u16, &HeaderValue, &Bytes),
    state: crate::breaker::State,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let extra = [
        ("x-fusegate-fallback", "static"),
        ("x-fusegate-breaker", state.as_str()),
    ];
    let content_type = content_type.clone();
    send(
        session,
        status,
        content_type,
        body.clone(),
        request_id,
        extra.into_iter(),
    )
    .await
}
