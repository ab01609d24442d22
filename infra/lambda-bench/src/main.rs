//! `lambda-bench [runs]`: runs each function binary (release build) under a minimal Lambda Runtime API
//! emulator, against moto and the Anthropic simulator, and reports init (spawn → first `/next`), the first
//! response's latency and peak RSS, each next to a hello-world `lambda_runtime` baseline as a ratio, with
//! the targets (init ≤ 1.5×, RSS ≤ 2× + 8 MiB).
//!
//! `lambda-bench [runs] --before DIR` adds the same functions built from an earlier commit (in `DIR`) as
//! rows of the same rounds: the before and after of one run.
//!
//! `lambda-bench --check [runs]` (what `make test` runs, on the debug build): the same cold starts at a
//! smoke size, failing if any function opens a certificate file or directory, or an AWS profile file,
//! from its start to its first response; two controls prove the check sees such reads when they happen.

mod watch;

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
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited before asking for an event: {status}",
                bin.display()
            );
        }
        if spawned.elapsed() > Duration::from_secs(30) {
            panic!("{} did not ask for an event within 30 s", bin.display());
        }
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

/// Where the function runs: moto, its tables and queues, the simulator, and the environment naming them.
struct Stage {
    _moto: Moto,
    _sim: SimServer,
    env: Vec<(String, String)>,
}

async fn stage() -> Stage {
    let moto = Moto::start().expect("moto (run via `make bench` or `make test`, which install it)");
    let sdk = sdk_config(moto.endpoint()).await;
    let names = tables::create_all(&aws_sdk_dynamodb::Client::new(&sdk), "bench")
        .await
        .expect("tables in moto");
    let queues = claresia_local::queues::create_all(&aws_sdk_sqs::Client::new(&sdk), "bench")
        .await
        .expect("queues in moto");
    let sim = Sim::new();
    demo::seed(&sim);
    let sim = SimServer::start("127.0.0.1:0".parse().expect("address"), sim)
        .await
        .expect("the simulator");
    let env = [
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
    Stage {
        _moto: moto,
        _sim: sim,
        env,
    }
}

/// Each function with the events of its first invocations (the hello-world baselines first).
fn cases() -> Vec<(&'static str, Vec<String>)> {
    let event_dir = workspace_root().join("events");
    let read = |f: &str| std::fs::read_to_string(event_dir.join(f)).expect("event file");
    let hello = || vec!["{\"hello\":\"world\"}".to_string()];
    vec![
        ("hello-lambda", hello()),
        ("hello-lambda-current-thread", hello()),
        (
            "connection-api",
            [
                "put-connection.json",
                "get-connection.json",
                "post-connection-test.json",
                "delete-connection.json",
            ]
            .iter()
            .map(|f| read(f))
            .collect(),
        ),
        (
            "catalog-api",
            [
                "put-connection.json",
                "put-skill.json",
                "list-skills.json",
                "delete-skill.json",
            ]
            .iter()
            .map(|f| read(f))
            .collect(),
        ),
        (
            "poll-dispatcher",
            vec![read("poll-dispatcher-scheduled.json")],
        ),
        ("publish-sweeper", vec![read("publish-sweeper-sqs.json")]),
        ("audit-poller", vec![read("audit-poller-sqs.json")]),
    ]
}

struct Measured {
    init: Duration,
    first: Duration,
    peak_kib: u64,
    statuses: Vec<u16>,
}

/// Every case's cold starts, round-robin after one discarded warm-up round, so a drift of the machine
/// (a page cache warming, another process) weighs on every function alike and the ratios stay fair.
async fn measure_all(
    cases: &[(PathBuf, Vec<String>)],
    env: &[(String, String)],
    runs: usize,
) -> Vec<Measured> {
    let mut samples: Vec<Vec<Sample>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..=runs {
        for ((bin, events), kept) in cases.iter().zip(samples.iter_mut()) {
            let s = run_once(bin, env, events).await;
            if round > 0 {
                kept.push(s);
            }
        }
    }
    samples
        .into_iter()
        .map(|s| Measured {
            init: median(s.iter().map(|x| x.cold_start).collect()),
            first: median(s.iter().map(|x| x.first_invoke).collect()),
            peak_kib: s.iter().map(|x| x.peak_rss_kib).max().unwrap_or(0),
            statuses: s.last().map(|x| x.statuses.clone()).unwrap_or_default(),
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    // `--before DIR`: the same functions built from an earlier commit, measured in the same rounds.
    let before = args
        .iter()
        .position(|a| a == "--before")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let runs: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(if check { 3 } else { 15 });
    let stage = stage().await;
    if check {
        std::process::exit(check_reads(&stage, runs).await);
    }
    bench(&stage, runs, before).await;
}

async fn bench(stage: &Stage, runs: usize, before: Option<PathBuf>) {
    let release = workspace_root().join("target/release");
    println!(
        "lambda-bench: {runs} cold starts per function (medians), release build for this machine"
    );
    println!(
        "{:<28} {:>9} {:>7} {:>13} {:>9} {:>11} {:>8}  statuses",
        "function", "init", "× hello", "1st response", "peak RSS", "RSS limit", "targets"
    );
    let mut rows: Vec<(String, PathBuf, Vec<String>)> = cases()
        .into_iter()
        .map(|(name, events)| (name.to_string(), release.join(name), events))
        .collect();
    if let Some(dir) = &before {
        let earlier: Vec<_> = rows
            .iter()
            .filter(|(name, _, _)| !name.starts_with("hello") && dir.join(name).exists())
            .map(|(name, _, events)| (format!("{name} (before)"), dir.join(name), events.clone()))
            .collect();
        rows.extend(earlier);
    }
    let cases: Vec<(PathBuf, Vec<String>)> = rows
        .iter()
        .map(|(_, bin, events)| (bin.clone(), events.clone()))
        .collect();
    let measured = measure_all(&cases, &stage.env, runs).await;
    let base = &measured[0];
    for ((name, _, _), m) in rows.iter().zip(&measured) {
        let ratio = m.init.as_secs_f64() / base.init.as_secs_f64();
        let rss_limit_kib = 2 * base.peak_kib + 8 * 1024;
        let met = ratio <= 1.5 && m.peak_kib <= rss_limit_kib;
        println!(
            "{:<28} {:>6.2} ms {:>6.2}× {:>10.2} ms {:>5.1} MiB {:>7.1} MiB {:>8}  {:?}",
            name,
            m.init.as_secs_f64() * 1e3,
            ratio,
            m.first.as_secs_f64() * 1e3,
            m.peak_kib as f64 / 1024.0,
            rss_limit_kib as f64 / 1024.0,
            if met { "met" } else { "MISSED" },
            m.statuses
        );
    }
}

/// The smoke check `make test` runs: exit status 1 when a function reads a certificate store or a profile
/// file at init, or when a control shows the check would not have seen it.
async fn check_reads(stage: &Stage, runs: usize) -> i32 {
    let debug = workspace_root().join("target/debug");
    let scratch = std::env::temp_dir().join(format!("lambda-check-{}", std::process::id()));
    let (home, certs) = (scratch.join("home"), scratch.join("certs"));
    let aws = home.join(".aws");
    for dir in [&aws, &certs] {
        std::fs::create_dir_all(dir).expect("scratch directory");
    }
    let profile = "[default]\nregion = us-east-1\naws_access_key_id = testing\naws_secret_access_key = testing\n";
    std::fs::write(aws.join("config"), profile).expect("profile");
    std::fs::write(aws.join("credentials"), profile).expect("credentials");
    let bundle = std::fs::read(workspace_root().join("lib/aws/src/amazon-trust-services.pem"))
        .expect("a certificate to put in the store");
    std::fs::write(certs.join("ca.pem"), &bundle).expect("certificate");
    let watch = watch::OpenWatch::new(&[&aws, &certs]).expect("inotify");
    let mut env = stage.env.clone();
    env.extend([
        ("HOME".to_string(), home.display().to_string()),
        (
            "SSL_CERT_FILE".to_string(),
            certs.join("ca.pem").display().to_string(),
        ),
        ("SSL_CERT_DIR".to_string(), certs.display().to_string()),
    ]);
    println!("cold-start check: {runs} cold starts per function (debug build), reads of a certificate store or an AWS profile file from start to first response");
    let mut failed = 0;
    for (name, events) in cases() {
        watch.opened();
        let m = measure_all(&[(debug.join(name), events)], &env, runs)
            .await
            .remove(0);
        let opened = watch.opened();
        let verdict = if opened.is_empty() {
            "no such read"
        } else {
            "READ"
        };
        println!(
            "  {name:<28} init {:>7.2} ms, first response {:>8.2} ms: {verdict} {opened:?}",
            m.init.as_secs_f64() * 1e3,
            m.first.as_secs_f64() * 1e3
        );
        failed += usize::from(!opened.is_empty());
    }
    // The controls: the same check must see the reads the configuration asks for.
    let with = |extra: &[(&str, &str)], without: &[&str]| {
        let mut e: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| !without.contains(&k.as_str()))
            .cloned()
            .collect();
        e.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        e
    };
    let connection = debug.join("connection-api");
    let controls = [
        (
            "TLS_NATIVE_ROOTS=true",
            with(&[("TLS_NATIVE_ROOTS", "true")], &[]),
            &certs,
        ),
        (
            "no credentials in the environment",
            with(&[], &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
            &aws,
        ),
    ];
    // The first request connects (the HTTP clients read their roots then).
    let connect =
        vec![
            std::fs::read_to_string(workspace_root().join("events/put-connection.json"))
                .expect("event file"),
        ];
    for (what, control_env, dir) in controls {
        watch.opened();
        run_once(&connection, &control_env, &connect).await;
        let opened = watch.opened();
        let seen = opened.iter().any(|p| p.starts_with(dir));
        println!(
            "  control, connection-api with {what}: {} {opened:?}",
            if seen {
                "read seen, as it should be"
            } else {
                "NOT SEEN: the check is blind"
            }
        );
        failed += usize::from(!seen);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if failed > 0 {
        println!("cold-start check: {failed} failure(s)");
        1
    } else {
        println!("cold-start check: passed");
        0
    }
}
