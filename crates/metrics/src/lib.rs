//! Vouch's Prometheus metrics. Names are part of the operator interface (dashboards and
//! alerts use them): keep them stable, and keep `docs/OPERATIONS.md` in step.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The registry every Vouch metric lives in.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    REGISTRY
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    REGISTRY
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    g
}

/// HTTP requests by endpoint (the route pattern), method and status.
pub static HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "vouch_http_requests_total",
        "HTTP requests by endpoint, method and status",
        &["endpoint", "method", "status"],
    )
});

/// HTTP request latency by endpoint and method.
pub static HTTP_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "vouch_http_request_duration_seconds",
        "HTTP request latency by endpoint and method",
    )
    .buckets(vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ]);
    let h = HistogramVec::new(opts, &["endpoint", "method"])
        .unwrap_or_else(|e| panic!("histogram: {e}"));
    REGISTRY
        .register(Box::new(h.clone()))
        .unwrap_or_else(|e| panic!("histogram: {e}"));
    h
});

/// Outbox events by channel (`email`, `sms`) and event (`queued`, `sent`, `retried`, `failed`).
pub static OUTBOX: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "vouch_outbox_messages_total",
        "Outbox messages by channel and event (queued, sent, retried, failed)",
        &["channel", "event"],
    )
});

/// Messages waiting in the outbox, by channel (read from the database at scrape time).
pub static OUTBOX_PENDING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "vouch_outbox_pending",
        "Messages waiting to be sent, by channel",
        &["channel"],
    )
});

/// Age of the oldest waiting message, by channel (read at scrape time).
pub static OUTBOX_OLDEST_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "vouch_outbox_oldest_pending_age_seconds",
        "Age of the oldest message waiting to be sent, by channel",
        &["channel"],
    )
});

/// When the outbox worker last finished a round (Unix seconds): a worker that stops
/// rounding (stuck or dead) shows as a growing distance from now.
pub static OUTBOX_HEARTBEAT: LazyLock<IntGauge> = LazyLock::new(|| {
    let g = IntGauge::new(
        "vouch_outbox_worker_last_round_timestamp_seconds",
        "When the outbox worker last finished a round (Unix seconds)",
    )
    .unwrap_or_else(|e| panic!("metric: {e}"));
    REGISTRY
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("metric: {e}"));
    g
});

/// 1 while a background task (`outbox`, `housekeeping`) runs, 0 while it is being restarted.
pub static TASK_UP: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "vouch_background_task_up",
        "1 while the background task runs, 0 while it is down",
        &["task"],
    )
});

/// Restarts of a background task after it panicked or ended on its own.
pub static TASK_RESTARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "vouch_background_task_restarts_total",
        "Restarts of a background task after it died",
        &["task"],
    )
});

/// Validation sessions by medium and event (`created`, `validated`, `burned`, `expired`).
pub static VALIDATION: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "vouch_validation_sessions_total",
        "3PID validation sessions by medium and event (created, validated, burned, expired)",
        &["medium", "event"],
    )
});

/// Requests refused by a rate limiter, by limiter.
pub static RATE_LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "vouch_rate_limited_total",
        "Requests refused by a rate limiter, by limiter",
        &["limiter"],
    )
});

/// UIA sessions by operation and outcome (`started`, `completed`, `stage_failed`).
pub static UIA: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "vouch_uia_sessions_total",
        "User-Interactive Authentication by operation and outcome (started, completed, stage_failed)",
        &["operation", "outcome"],
    )
});

/// Rows removed by housekeeping, by kind.
pub static HOUSEKEEPING: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "vouch_housekeeping_removed_total",
        "Rows removed by housekeeping, by kind",
        &["kind"],
    )
});

/// Registers every metric. (A labelled metric shows in a scrape once it has a value.)
pub fn init() {
    LazyLock::force(&HTTP_REQUESTS);
    LazyLock::force(&HTTP_DURATION);
    LazyLock::force(&OUTBOX);
    LazyLock::force(&OUTBOX_PENDING);
    LazyLock::force(&OUTBOX_OLDEST_AGE);
    LazyLock::force(&OUTBOX_HEARTBEAT);
    LazyLock::force(&TASK_UP);
    LazyLock::force(&TASK_RESTARTS);
    LazyLock::force(&VALIDATION);
    LazyLock::force(&RATE_LIMITED);
    LazyLock::force(&UIA);
    LazyLock::force(&HOUSEKEEPING);
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    init();
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&REGISTRY.gather(), &mut out) {
        return format!("# cannot encode metrics: {e}\n");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_up_in_the_text() {
        OUTBOX.with_label_values(&["email", "queued"]).inc();
        HTTP_DURATION
            .with_label_values(&["/x", "GET"])
            .observe(0.003);
        let text = render();
        assert!(
            text.contains("vouch_outbox_messages_total{channel=\"email\",event=\"queued\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE vouch_http_request_duration_seconds histogram"));
    }
}
