//! Chaos under load: steady traffic from several clients while the upstream dies and comes
//! back, hangs, answers garbage or closes mid-body. Every request gets an answer within the
//! breaker timeout plus a margin, the breaker opens and later closes through half-open, and
//! the counts in /breakers and /metrics add up to the requests sent.

mod common;

use common::{wait_until, Fault, Gateway, Traffic, Upstream};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(300);
/// Slack on top of the breaker timeout for an answer (scheduling on a busy machine).
const MARGIN: Duration = Duration::from_secs(3);
const CLIENTS: usize = 4;
/// Each client stops after this many requests if the scenario has not ended before.
const MAX_PER_CLIENT: usize = 5_000;

#[derive(Debug, Default)]
struct Tally {
    /// Status code -> count, for answers whose headers arrived.
    statuses: HashMap<u16, u64>,
    /// Gateway rejections (503 with X-Fusegate-Breaker).
    rejections: u64,
    /// Headers arrived, then the body broke off.
    truncated: u64,
    /// No answer at all: connection refused or reset by the gateway.
    transport_errors: Vec<String>,
    slowest: Duration,
}

/// One client request: its status, whether it was a breaker rejection and whether its
/// body broke off, or the transport error; and how long it took.
struct Answer {
    result: Result<(u16, bool, bool), String>,
    took: Duration,
}

fn send(agent: &ureq::Agent, url: &str) -> Answer {
    let started = Instant::now();
    let resp = match agent.get(url).call() {
        Ok(r) => Ok(r),
        Err(ureq::Error::Status(_, r)) => Ok(r),
        Err(e) => Err(e.to_string()),
    };
    let result = resp.map(|r| {
        let status = r.status();
        let rejected = status == 503 && r.header("x-fusegate-breaker").is_some();
        (status, rejected, r.into_string().is_err())
    });
    let took = started.elapsed();
    if matches!(result, Ok((_, true, _))) {
        // Turned away: a short pause before the next request, as a client that heeds
        // `Retry-After` would make (only shorter). Without it a fast build answers the
        // clients' whole request budget with rejections before the breaker's open time
        // is up, and nobody is left to send the request that makes it half-open.
        std::thread::sleep(Duration::from_millis(2));
    }
    Answer { result, took }
}

impl Tally {
    fn of(answers: Vec<Answer>) -> Tally {
        let mut t = Tally::default();
        for a in answers {
            match a.result {
                Ok((status, rejected, truncated)) => {
                    *t.statuses.entry(status).or_default() += 1;
                    t.rejections += u64::from(rejected);
                    t.truncated += u64::from(truncated);
                }
                Err(e) => t.transport_errors.push(e),
            }
            t.slowest = t.slowest.max(a.took);
        }
        t
    }
}

fn start_traffic(url: String) -> Traffic<Answer> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    Traffic::start(CLIENTS, MAX_PER_CLIENT, move || send(&agent, &url))
}

/// `name{labels} value` lines of /metrics for this route, summed by metric name.
fn metric_sums(gw: &Gateway, metric: &str) -> u64 {
    gw.admin("GET", "/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with(metric) && l.contains("route=\"chaos\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

fn transitions_to(gw: &Gateway, state: &str) -> u64 {
    metric_sums(
        gw,
        &format!("fusegate_breaker_transitions_total{{route=\"chaos\",to=\"{state}\"}}"),
    )
}

/// Runs one scenario: traffic, `fault`, breaker open, `heal`, breaker closed again.
fn scenario(fault: impl Fn(&Upstream), heal: impl Fn(&Upstream)) -> (Tally, Gateway) {
    let up = Upstream::start("chaos");
    let gw = Gateway::start(&format!(
        "[routes.chaos]\nupstreams = [\"{}\"]\nbreaker = {{ volume_threshold = 5, error_threshold_percentage = 50, rolling_window = \"2s\", rolling_buckets = 4, reset_timeout = \"1s\", timeout = \"{}ms\" }}\n",
        up.url(),
        TIMEOUT.as_millis()
    ));
    let traffic = start_traffic(gw.url("/api/chaos/item"));
    traffic.wait_more(40);

    fault(&up);
    gw.wait_state("chaos", "open");
    traffic.wait_more(40);

    heal(&up);
    wait_until(
        "the breaker to close again",
        Duration::from_secs(20),
        || transitions_to(&gw, "closed") >= 1 && gw.breaker("chaos")["state"] == "closed",
    );
    traffic.wait_more(40);
    let tally = Tally::of(traffic.finish());

    let sent: u64 = tally.statuses.values().sum::<u64>() + tally.transport_errors.len() as u64;
    println!(
        "chaos: {sent} requests, statuses {:?}, {} rejected, {} truncated, slowest {:?}",
        tally.statuses, tally.rejections, tally.truncated, tally.slowest
    );
    assert!(
        tally.transport_errors.is_empty(),
        "{} requests got no answer: {:?}",
        tally.transport_errors.len(),
        &tally.transport_errors[..tally.transport_errors.len().min(3)]
    );
    assert!(
        tally.slowest <= TIMEOUT + MARGIN,
        "a request took {:?}, more than the timeout and margin",
        tally.slowest
    );
    assert!(transitions_to(&gw, "open") >= 1);
    assert!(
        transitions_to(&gw, "half_open") >= 1,
        "recovery went through half-open"
    );

    // Every request is in /metrics once it has completed.
    wait_until("every request in /metrics", Duration::from_secs(10), || {
        metric_sums(&gw, "fusegate_requests_total") == sent
    });
    let rejections = metric_sums(&gw, "fusegate_rejections_total");
    assert_eq!(
        rejections, tally.rejections,
        "rejections seen = rejections counted"
    );
    assert_eq!(
        gw.breaker("chaos")["rejected_total"],
        rejections,
        "/breakers agrees"
    );
    (tally, gw)
}

/// Upstream failures the gateway answered itself: 502 and 504.
fn gateway_failures(t: &Tally) -> u64 {
    t.statuses.get(&502).copied().unwrap_or(0) + t.statuses.get(&504).copied().unwrap_or(0)
}

/// The fault showed as gateway answers with `status`, and every one of them is an upstream
/// failure in /metrics.
fn assert_gateway_failures(t: &Tally, gw: &Gateway, status: u16) {
    assert!(
        t.statuses.get(&status).copied().unwrap_or(0) > 0,
        "{:?}",
        t.statuses
    );
    assert_eq!(
        metric_sums(gw, "fusegate_upstream_failures_total"),
        gateway_failures(t)
    );
}

#[test]
fn the_upstream_dies_and_comes_back() {
    let (t, gw) = scenario(|up| up.kill(), |up| up.revive());
    assert_gateway_failures(&t, &gw, 502);
}

#[test]
fn the_upstream_hangs() {
    let (t, gw) = scenario(
        |up| up.set_fault(Fault::Hang),
        |up| up.set_fault(Fault::None),
    );
    assert_gateway_failures(&t, &gw, 504);
}

#[test]
fn the_upstream_answers_garbage() {
    let (t, gw) = scenario(
        |up| up.set_fault(Fault::Garbage),
        |up| up.set_fault(Fault::None),
    );
    assert_gateway_failures(&t, &gw, 502);
}

#[test]
fn the_upstream_closes_mid_body() {
    let (t, gw) = scenario(
        |up| up.set_fault(Fault::CloseMidBody),
        |up| up.set_fault(Fault::None),
    );
    // The headers had gone out: those clients see a 200 whose body breaks off.
    assert!(t.truncated > 0, "{t:?}");
    assert!(metric_sums(&gw, "fusegate_upstream_failures_total") >= t.truncated.min(5));
}
