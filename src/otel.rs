//! Span export (`[tracing]`): a span per proxied request, sent in batches to an
//! OpenTelemetry collector over OTLP/HTTP (protobuf) with the OpenTelemetry SDK.
//!
//! The SDK's batch processor runs on its own thread with a bounded queue, so the request
//! path only builds the span and hands it over: it never waits on the collector. Spans
//! the queue has no room for, and spans in a batch the collector refused or did not
//! answer in time, are dropped and counted in `fusegate_trace_spans_dropped_total`. An
//! unsampled request makes no span at all.

use crate::config::TracingConfig;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter,
};
use prometheus::IntCounter;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Spans waiting for export before new ones are dropped.
pub const QUEUE_LEN: usize = 4096;
/// How long one export may take before its batch counts as lost.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a partial batch is sent.
const EXPORT_DELAY: Duration = Duration::from_millis(500);

/// Checks an OTLP/HTTP base URL: `http://host:port` with an optional path. (The exporter
/// speaks plain HTTP; a collector behind TLS needs a local agent in front.)
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("{url:?} must be an http://host:port URL"));
    }
    Ok(())
}

/// The `/v1/traces` URL for a base URL.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// A running exporter, with its sampling ratio.
pub struct Otel {
    config: TracingConfig,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Spans handed to the SDK and not yet exported (or lost).
    pending: Arc<AtomicUsize>,
    dropped: IntCounter,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otel")
            .field("config", &self.config)
            .finish()
    }
}

/// The span's facts, known when the request ends.
#[derive(Debug, Clone, Copy)]
pub struct SpanFacts<'a> {
    pub method: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub upstream: Option<&'a str>,
    pub breaker: Option<&'a str>,
    pub cache: Option<&'a str>,
    pub outcome: &'a str,
    pub request_id: Option<&'a str>,
}

impl Otel {
    /// Builds the exporter and the SDK's pipeline. The exporter's HTTP client is made on a
    /// thread of its own: it must not be made inside an async runtime.
    pub fn start(config: &TracingConfig, dropped: IntCounter) -> Result<Otel, String> {
        check_endpoint(&config.otlp_endpoint)?;
        let url = traces_url(&config.otlp_endpoint);
        let built = std::thread::spawn(move || {
            use opentelemetry_otlp::WithExportConfig;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "the OTLP exporter could not be built".to_string())??;
        let pending = Arc::new(AtomicUsize::new(0));
        let exporter = Counting {
            inner: built,
            pending: pending.clone(),
            dropped: dropped.clone(),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE_LEN)
            .with_scheduled_delay(EXPORT_DELAY)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // fusegate decides what is sampled; a span it starts is recorded.
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("fusegate");
        Ok(Otel {
            config: config.clone(),
            provider,
            tracer,
            pending,
            dropped,
        })
    }

    /// The settings it was started with.
    pub fn config(&self) -> &TracingConfig {
        &self.config
    }

    /// Whether a new trace is sampled, by `sample_ratio`.
    pub fn sample_new(&self) -> bool {
        let ratio = self.config.sample_ratio;
        ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)
    }

    /// Starts the gateway's span for a request: a child of the client's span when the
    /// trace was continued (`parent`: trace id, span id), else the root of a new trace.
    pub fn start_span(
        &self,
        method: &http::Method,
        parent: Option<(u128, u64)>,
    ) -> opentelemetry_sdk::trace::Span {
        let cx = match parent {
            Some((trace_id, span_id)) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(span_id),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        self.tracer
            .span_builder(method.as_str().to_string())
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &cx)
    }

    /// Ends a request's span with what is known at its end, and hands it to the
    /// exporter (or counts it dropped when the exporter's queue is full).
    pub fn finish(&self, mut span: opentelemetry_sdk::trace::Span, facts: SpanFacts<'_>) {
        if let Some(route) = facts.route {
            span.update_name(format!("{} {route}", facts.method));
        }
        let mut attributes = vec![
            KeyValue::new("http.response.status_code", i64::from(facts.status)),
            KeyValue::new("status", i64::from(facts.status)),
            KeyValue::new("outcome", facts.outcome.to_string()),
        ];
        let optional = [
            ("route", facts.route),
            ("upstream", facts.upstream),
            ("breaker", facts.breaker),
            ("cache", facts.cache),
            ("request_id", facts.request_id),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                attributes.push(KeyValue::new(k, v.to_string()));
            }
        }
        span.set_attributes(attributes);
        if facts.status >= 500 {
            span.set_status(Status::error(facts.outcome.to_string()));
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= QUEUE_LEN {
            // The SDK's queue is full: it will drop this span.
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
        }
        span.end_with_timestamp(SystemTime::now());
    }
}

impl Drop for Otel {
    /// Flushes what the exporter holds, on a thread of its own: the last user may be a
    /// request on an async worker, which must not block on the collector.
    fn drop(&mut self) {
        let provider = self.provider.clone();
        std::thread::spawn(move || {
            let _ = provider.shutdown();
        });
    }
}

/// The OTLP exporter, counting what it could not deliver.
#[derive(Debug)]
struct Counting {
    inner: opentelemetry_otlp::SpanExporter,
    pending: Arc<AtomicUsize>,
    dropped: IntCounter,
}

impl SpanExporter for Counting {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
        if let Err(e) = &result {
            self.dropped.inc_by(n as u64);
            log::debug!("{n} spans not exported: {e}");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_an_http_base_url() {
        assert!(check_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("http://127.0.0.1:4318/otlp/").is_ok());
        assert!(check_endpoint("https://collector:4318").is_err());
        assert!(check_endpoint("127.0.0.1:4318").is_err());
        assert!(check_endpoint("not a url").is_err());
        assert_eq!(
            traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
    }
}
