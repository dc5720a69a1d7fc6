//! The run: configure the room, release the users at their arrival times, sample the room's
//! stats, stop on completion / duration / trace bound / shutdown, and assemble the trace.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::LoadError;
use crate::api::RoomConfig;
use crate::arrival::plan_users;
use crate::http::{Exchange, HttpClient};
use crate::limits::PROGRESS_INTERVAL_MS;
use crate::options::{AdminToken, LoadOptions, ProtectedOptions, Reconfigure, RoomChange};
use crate::progress::{Progress, ProgressSnapshot};
use crate::report::{Report, StopReason};
use crate::time::{Clock, TimeUs};
use crate::trace::{Outcome, RequestKind, RequestRecord, RoomSample, Trace, UserTrace};
use crate::user::{UserContext, UserResult, simulate};

/// Users released per turn of the arrival loop, so a burst of arrivals (all-at-once) does not
/// starve the loop's other duties (collecting results, progress, stop signals).
const SPAWN_BATCH_MAX: usize = 1_000;

/// Runs a load test and measures it.
///
/// # Errors
/// [`LoadError::InvalidOptions`] for options out of range, [`LoadError::Configure`] if the
/// room cannot be configured or read. Failed requests during the run are measured, not errors.
pub async fn run(options: LoadOptions, progress: &dyn Progress) -> Result<Report, LoadError> {
    run_until(options, progress, std::future::pending()).await
}

/// [`run`], stopping early (stop reason `interrupted`, figures kept) when `shutdown` completes.
///
/// # Errors
/// As [`run`].
pub async fn run_until(
    options: LoadOptions,
    progress: &dyn Progress,
    shutdown: impl Future<Output = ()>,
) -> Result<Report, LoadError> {
    run_protected(options, None, progress, shutdown).await
}

/// [`run_until`], with a protected service: every admitted user first sends it one request
/// (kind `protected`) with its admission token; or, with [`ProtectedOptions::direct`], users
/// only send that request, at their arrival, and the waiting room is left alone (the room's
/// capacity is then reported as 0).
///
/// # Errors
/// As [`run`], and [`LoadError::InvalidOptions`] for a bad protected URL.
pub async fn run_protected(
    options: LoadOptions,
    protected: Option<ProtectedOptions>,
    progress: &dyn Progress,
    shutdown: impl Future<Output = ()>,
) -> Result<Report, LoadError> {
    options.validate()?;
    if let Some(protected) = &protected {
        protected.validate()?;
    }
    let direct = protected.as_ref().is_some_and(|protected| protected.direct);
    let clock = Clock::start();
    let timeout = Duration::from_millis(options.request_timeout_ms);
    let http = HttpClient::new(&options.base_url, options.connections_max, timeout, clock);
    // Its own pool and in-flight bound: the protected service is another server.
    let protected_http = protected
        .as_ref()
        .map(|protected| HttpClient::new(&protected.url, options.connections_max, timeout, clock));
    let mut requests = Vec::new();
    let (capacity, config) = if direct {
        (0, None)
    } else {
        prepare_room(&options, &http, &mut requests).await?
    };
    // Overshoot is measured against the largest capacity the run gives the room.
    let capacity = options
        .reconfigure
        .iter()
        .filter_map(|change| match change.change {
            RoomChange::Capacity(capacity) => Some(capacity),
            RoomChange::Paused(_) => None,
        })
        .fold(capacity, u32::max);
    let (trace_parts, stop_reason, internal_errors) = release_users(
        &options,
        &http,
        protected_http,
        direct,
        config,
        progress,
        shutdown,
    )
    .await;
    let (users, user_requests, room_samples, started_at_us) = trace_parts;
    requests.extend(user_requests);
    let trace = Trace {
        capacity,
        started_at_us,
        ended_at_us: clock.now_us(),
        users,
        requests,
        room_samples,
    };
    Ok(Report::build(
        options,
        protected,
        &trace,
        stop_reason,
        internal_errors,
    ))
}

fn configure_error<T>(what: &str, exchange: &Exchange<T>) -> LoadError {
    let label = exchange
        .outcome
        .failure_label()
        .unwrap_or_else(|| "ok".to_string());
    LoadError::Configure(format!("{what}: {label}"))
}

fn record<T>(requests: &mut Vec<RequestRecord>, kind: RequestKind, exchange: &Exchange<T>) {
    requests.push(RequestRecord {
        kind,
        outcome: exchange.outcome,
        sent_us: exchange.sent_us,
        received_us: exchange.received_us,
    });
}

/// Resets / configures / reads the room; returns its capacity, and the config PUT if the run
/// configured it.
async fn prepare_room(
    options: &LoadOptions,
    http: &HttpClient,
    requests: &mut Vec<RequestRecord>,
) -> Result<(u32, Option<RoomConfig>), LoadError> {
    let token = options.admin_token.as_ref();
    if options.reset_room {
        let token = token.ok_or_else(|| LoadError::Configure("no admin token".into()))?;
        let exchange = http.close_room(&options.room, token).await;
        record(requests, RequestKind::Configure, &exchange);
        if exchange.outcome != Outcome::Ok {
            return Err(configure_error("closing the room", &exchange));
        }
    }
    if options.configure {
        let token = token.ok_or_else(|| LoadError::Configure("no admin token".into()))?;
        let config = options.room_config(http.clock().now_us());
        let exchange = http.put_room(&options.room, &config, token).await;
        record(requests, RequestKind::Configure, &exchange);
        return match exchange.body {
            Some(stats) => Ok((stats.capacity, Some(config))),
            None => Err(configure_error("PUT of the room config", &exchange)),
        };
    }
    match (token, options.capacity) {
        (Some(token), _) => {
            let exchange = http.room_stats(&options.room, token).await;
            record(requests, RequestKind::Stats, &exchange);
            match exchange.body {
                Some(stats) => Ok((stats.capacity, None)),
                None => Err(configure_error("reading the room", &exchange)),
            }
        }
        (None, Some(capacity)) => Ok((capacity, None)),
        (None, None) => Err(LoadError::InvalidOptions(
            "the room's capacity is unknown: give --capacity or --admin-token".into(),
        )),
    }
}

type TraceParts = (Vec<UserTrace>, Vec<RequestRecord>, Vec<RoomSample>, TimeUs);

fn snapshot(context: &UserContext, planned: usize, elapsed: Duration) -> ProgressSnapshot {
    let live = &context.live;
    ProgressSnapshot {
        users_planned: planned as u64,
        users_arrived: live.arrived.load(Ordering::Relaxed),
        users_finished: live.finished.load(Ordering::Relaxed),
        joined: live.joined.load(Ordering::Relaxed),
        join_failed: live.join_failed.load(Ordering::Relaxed),
        waiting: live.waiting.load(Ordering::Relaxed),
        active: live.active.load(Ordering::Relaxed),
        requests: live.requests.load(Ordering::Relaxed),
        failed_requests: live.failed_requests.load(Ordering::Relaxed),
        elapsed_ms: elapsed.as_millis() as u64,
    }
}

async fn release_users(
    options: &LoadOptions,
    http: &HttpClient,
    protected: Option<HttpClient>,
    direct: bool,
    config: Option<RoomConfig>,
    progress: &dyn Progress,
    shutdown: impl Future<Output = ()>,
) -> (TraceParts, StopReason, u64) {
    let plans = plan_users(options);
    let clock = http.clock();
    let started_at_us = clock.now_us();
    let started = tokio::time::Instant::now();
    let context = Arc::new(UserContext {
        http: http.clone(),
        room: options.room.clone(),
        run_id: format!("load-{}-{started_at_us}", options.seed),
        poll_interval_us: options.poll_interval_ms * 1000,
        reads: options.reads,
        heartbeat_interval_seconds: options.heartbeat_interval_seconds,
        stop: CancellationToken::new(),
        stop_reason: Mutex::new(None),
        live: Default::default(),
        records_max: options.trace_records_max,
        protected,
        forwarded_for: options
            .forwarded_for
            .as_deref()
            .and_then(|name| http::HeaderName::from_bytes(name.as_bytes()).ok()),
        direct,
    });
    let sampler = options
        .admin_token
        .clone()
        .filter(|_| !direct)
        .map(|token| {
            tokio::spawn(sample_room(
                http.clone(),
                options.room.clone(),
                token,
                Duration::from_millis(options.stats_interval_ms),
                context.stop.clone(),
            ))
        });
    let reconfigurer = match (config, options.admin_token.clone()) {
        (Some(config), Some(token)) if !options.reconfigure.is_empty() => {
            Some(tokio::spawn(reconfigure_room(
                http.clone(),
                options.room.clone(),
                token,
                config,
                options.reconfigure.clone(),
                started,
                context.stop.clone(),
            )))
        }
        _ => None,
    };

    let mut users: Vec<UserTrace> = plans
        .iter()
        .map(|plan| UserTrace::new(started_at_us + plan.arrival_offset_us as TimeUs))
        .collect();
    let mut requests: Vec<RequestRecord> = Vec::new();
    let mut internal_errors = 0_u64;
    let mut collect = |result: Result<UserResult, tokio::task::JoinError>| match result {
        Ok(result) => {
            requests.extend(result.requests);
            if let Some(slot) = users.get_mut(result.index) {
                *slot = result.trace;
            }
        }
        Err(_) => internal_errors += 1,
    };

    let deadline = started + Duration::from_secs(options.duration_max_seconds);
    let mut progress_tick = tokio::time::interval(Duration::from_millis(PROGRESS_INTERVAL_MS));
    let mut tasks = JoinSet::new();
    let mut next_user = 0;
    tokio::pin!(shutdown);
    let stop_reason = loop {
        if next_user == plans.len() && tasks.is_empty() {
            break StopReason::Completed;
        }
        let next_arrival = plans.get(next_user).map(|plan| {
            tokio::time::Instant::from_std(
                clock.instant_at(started_at_us + plan.arrival_offset_us as TimeUs),
            )
        });
        tokio::select! {
            biased;
            () = &mut shutdown => break StopReason::Interrupted,
            () = tokio::time::sleep_until(deadline) => break StopReason::DurationMax,
            () = context.stop.cancelled() => {
                let reason = context.stop_reason.lock().ok().and_then(|reason| *reason);
                break reason.unwrap_or(StopReason::Interrupted);
            }
            _ = progress_tick.tick() => {
                progress.update(&snapshot(&context, plans.len(), started.elapsed()));
            }
            Some(result) = tasks.join_next() => collect(result),
            () = tokio::time::sleep_until(next_arrival.unwrap_or(deadline)),
                if next_arrival.is_some() =>
            {
                let now_us = clock.now_us();
                let mut released = 0;
                while let Some(plan) = plans.get(next_user) {
                    let arrival_us = started_at_us + plan.arrival_offset_us as TimeUs;
                    if arrival_us > now_us || released == SPAWN_BATCH_MAX {
                        break;
                    }
                    tasks.spawn(simulate(context.clone(), next_user, *plan, arrival_us));
                    next_user += 1;
                    released += 1;
                }
            }
        }
    };
    context.stop.cancel();
    while let Some(result) = tasks.join_next().await {
        collect(result);
    }
    progress.finish(&snapshot(&context, plans.len(), started.elapsed()));
    let (room_samples, sample_requests) = match sampler {
        Some(sampler) => sampler.await.unwrap_or_else(|_| {
            internal_errors += 1;
            (Vec::new(), Vec::new())
        }),
        None => (Vec::new(), Vec::new()),
    };
    requests.extend(sample_requests);
    if let Some(reconfigurer) = reconfigurer {
        match reconfigurer.await {
            Ok(changes) => requests.extend(changes),
            Err(_) => internal_errors += 1,
        }
    }
    (
        (users, requests, room_samples, started_at_us),
        stop_reason,
        internal_errors,
    )
}

/// PUTs `config` with each change (and every earlier one) applied at its time after `started`,
/// until `stop`.
async fn reconfigure_room(
    http: HttpClient,
    room: String,
    token: AdminToken,
    mut config: RoomConfig,
    changes: Vec<Reconfigure>,
    started: tokio::time::Instant,
    stop: CancellationToken,
) -> Vec<RequestRecord> {
    let mut requests = Vec::new();
    for change in changes {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(started + Duration::from_secs(change.at_seconds)) => {}
        }
        change.apply(&mut config);
        let exchange = http.put_room(&room, &config, &token).await;
        record(&mut requests, RequestKind::Configure, &exchange);
    }
    requests
}

/// Samples the room's stats every `interval` until `stop`; one request at a time.
async fn sample_room(
    http: HttpClient,
    room: String,
    token: AdminToken,
    interval: Duration,
    stop: CancellationToken,
) -> (Vec<RoomSample>, Vec<RequestRecord>) {
    let mut samples = Vec::new();
    let mut requests = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let exchange = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            exchange = http.room_stats(&room, &token) => exchange,
        };
        record(&mut requests, RequestKind::Stats, &exchange);
        if let Some(stats) = exchange.body {
            samples.push(RoomSample {
                at_us: exchange.received_us,
                capacity: stats.capacity,
                active_count: stats.active_count,
                waiting_count: stats.waiting_count,
            });
        }
    }
    (samples, requests)
}
