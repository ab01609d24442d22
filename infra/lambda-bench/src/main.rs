//! `lambda-bench [runs]`: runs each function binary (release build) under a minimal Lambda Runtime API
//! emulator, against moto and the Anthropic simulator, and reports cold start (spawn → first `/next`),
//! the first invocation's latency, and peak RSS, next to a hello-world `lambda_runtime` baseline.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anthropic_sim::{demo, Sim, SimServer};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use claresia_local::{moto::Moto, sdk_config, tables, workspace_root};
use tokio::sync::{mpsc, Notify};

#[derive(Default)]
struct Runtime {
    events: Mutex<VecDeque<(String, String)>>,
    first_next: Mutex<Option<Instant>>,
    responses: Mutex<Vec<(String, u16, String)>>,
    event_ready: Notify,
    done: Option<mpsc::UnboundedSender<()>>,
}

type Shared = Arc<Runtime>;

async fn next(State(rt): State<Shared>) -> impl IntoResponse {
    rt.first_next
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    loop {
        let notified = rt.event_ready.notified();
        if let Some((id, body)) = rt.events.lock().unwrap().pop_front() {
            let mut h = HeaderMap::new();
            h.insert(
                "lambda-runtime-aws-request-id",
                HeaderValue::from_str(&id).unwrap(),
            );
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 29_000;
            h.insert(
                "lambda-runtime-deadline-ms",
                HeaderValue::from(deadline as u64),
            );
            h.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static("arn:aws:lambda:eu-west-1:123456789012:function:bench"),
            );
            h.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (StatusCode::OK, h, body);
        }
        notified.await;
    }
}

async fn response(State(rt): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    let status = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("statusCode").and_then(|s| s.as_u64()))
        .unwrap_or(200) as u16;
    rt.responses.lock().unwrap().push((id, status, body));
    if let Some(tx) = &rt.done {
        let _ = tx.send(());
    }
    StatusCode::ACCEPTED
}

async fn error(State(rt): State<Shared>, body: String) -> StatusCode {
    rt.responses
        .lock()
        .unwrap()
        .push(("error".into(), 500, body));
    if let Some(tx) = &rt.done {
        let _ = tx.send(());
    }
    StatusCode::ACCEPTED
}

struct Sample {
    cold_start: Duration,
    first_invoke: Duration,
    peak_rss_kib: u64,
    statuses: Vec<u16>,
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn run_once(bin: &PathBuf, env: &[(String, String)], events: &[String]) -> Sample {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = Arc::new(Runtime {
        done: Some(tx),
        ..Runtime::default()
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let spawned = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("RUST_LOG", "warn")
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let pid = child.id().unwrap_or(0);
    while rt.first_next.lock().unwrap().is_none() {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let cold_start = rt.first_next.lock().unwrap().unwrap() - spawned;
    let mut first_invoke = Duration::ZERO;
    for (i, e) in events.iter().enumerate() {
        let t = Instant::now();
        rt.events
            .lock()
            .unwrap()
            .push_back((format!("req-{i}"), e.clone()));
        rt.event_ready.notify_waiters();
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("function answered");
        if i == 0 {
            first_invoke = t.elapsed();
        }
    }
    let peak = peak_rss_kib(pid);
    let _ = child.kill().await;
    server.abort();
    let statuses = rt.responses.lock().unwrap().iter().map(|r| r.1).collect();
    Sample {
        cold_start,
        first_invoke,
        peak_rss_kib: peak,
        statuses,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let release = workspace_root().join("target/release");
    let moto = Moto::start().expect("moto (run via `make bench`, which installs it)");
    let sdk = sdk_config(moto.endpoint()).await;
    let names = tables::create_all(&aws_sdk_dynamodb::Client::new(&sdk), "bench")
        .await
        .unwrap();
    let queues = claresia_local::queues::create_all(&aws_sdk_sqs::Client::new(&sdk), "bench")
        .await
        .unwrap();
    let sim = Sim::new();
    demo::seed(&sim);
    let sim = SimServer::start("127.0.0.1:0".parse().unwrap(), sim)
        .await
        .unwrap();
    let app_env: Vec<(String, String)> = [
        ("STAGE", "bench".to_string()),
        ("HUB_TABLE", names["HubTable"].clone()),
        ("ANTHROPIC_BASE_URL", sim.base_url()),
        ("AWS_ENDPOINT_URL", moto.endpoint().to_string()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("POLL_QUEUE_URL", queues["PollQueue"].clone()),
        ("SWEEP_QUEUE_URL", queues["SweepQueue"].clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let event_dir = workspace_root().join("events");
    let connection_events: Vec<String> = [
        "put-connection.json",
        "get-connection.json",
        "post-connection-test.json",
        "delete-connection.json",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(event_dir.join(f)).unwrap())
    .collect();

    let catalog_events: Vec<String> = [
        "put-connection.json",
        "put-skill.json",
        "list-skills.json",
        "delete-skill.json",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(event_dir.join(f)).unwrap())
    .collect();
    let one = |f: &str| vec![std::fs::read_to_string(event_dir.join(f)).unwrap()];
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("hello-lambda", vec!["{\"hello\":\"world\"}".to_string()]),
        ("connection-api", connection_events),
        ("catalog-api", catalog_events),
        ("poll-dispatcher", one("poll-dispatcher-scheduled.json")),
        ("publish-sweeper", one("publish-sweeper-sqs.json")),
        ("audit-poller", one("audit-poller-sqs.json")),
    ];
    println!(
        "lambda-bench: {runs} cold starts per function, release build for this machine (x86_64)"
    );
    println!(
        "{:<16} {:>14} {:>16} {:>14} {:>10}",
        "function", "cold start p50", "1st invoke p50", "peak RSS", "statuses"
    );
    for (name, events) in cases {
        let bin = release.join(name);
        let mut cold = Vec::new();
        let mut first = Vec::new();
        let mut peak = 0;
        let mut statuses = Vec::new();
        for _ in 0..runs {
            let s = run_once(&bin, &app_env, &events).await;
            cold.push(s.cold_start);
            first.push(s.first_invoke);
            peak = peak.max(s.peak_rss_kib);
            statuses = s.statuses;
        }
        println!(
            "{:<16} {:>11.2} ms {:>13.2} ms {:>10.1} MiB {:>10}",
            name,
            median(cold).as_secs_f64() * 1e3,
            median(first).as_secs_f64() * 1e3,
            peak as f64 / 1024.0,
            format!("{statuses:?}")
        );
    }
}
