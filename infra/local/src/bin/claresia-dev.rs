//! `claresia-dev`: the whole connector on localhost. Starts moto (DynamoDB, Secrets Manager, SQS), creates
//! the tables and work queues from template.yaml, starts the Anthropic simulator with demo data, runs the
//! dispatcher and the queue workers every tick, and serves the API through a dev gateway that verifies
//! JWTs like API Gateway. Prints ready tokens and curl commands. Ctrl-C stops all.

use std::net::SocketAddr;
use std::sync::Arc;

use anthropic_sim::{demo, Sim, SimServer};
use claresia_api::dispatch::Dispatcher;
use claresia_api::{App, Config};
use claresia_aws::WorkQueue;
use claresia_local::jwt::DevSigner;
use claresia_local::queues::{self, EventSourceMapping};
use claresia_local::{gateway, moto::Moto, sdk_config, tables};

const STAGE: &str = "local";

fn env_addr(name: &str, default: &str) -> Result<SocketAddr, String> {
    let v = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    v.parse().map_err(|e| format!("{name}={v:?}: {e}"))
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("claresia-dev: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(claresia_api::logging::filter())
        .with_target(false)
        .with_writer(claresia_api::logging::Redacting(std::io::stdout))
        .init();
    let api_addr = env_addr("CLARESIA_API_ADDR", "127.0.0.1:3000")?;
    let sim_addr = env_addr("CLARESIA_SIM_ADDR", "127.0.0.1:4010")?;
    let moto_port: u16 = std::env::var("CLARESIA_MOTO_PORT")
        .unwrap_or_else(|_| "5000".into())
        .parse()
        .map_err(|e| format!("CLARESIA_MOTO_PORT: {e}"))?;

    eprintln!("starting moto on 127.0.0.1:{moto_port} …");
    let moto = Moto::start_on(moto_port).map_err(|e| e.to_string())?;
    let sdk = sdk_config(moto.endpoint()).await;
    let names = tables::create_all(&aws_sdk_dynamodb::Client::new(&sdk), STAGE)
        .await
        .map_err(|e| e.to_string())?;

    let sim = Sim::new();
    demo::seed(&sim);
    let sim_server = SimServer::start(sim_addr, sim)
        .await
        .map_err(|e| format!("simulator on {sim_addr}: {e}"))?;

    let mut config = Config::from_lookup(|k| (k == "STAGE").then(|| STAGE.to_owned()))
        .map_err(|e| e.to_string())?;
    config.hub_table = names
        .get("HubTable")
        .cloned()
        .ok_or("template has no HubTable")?;
    config.telemetry_table = names
        .get("TelemetryTable")
        .cloned()
        .ok_or("template has no TelemetryTable")?;
    config.anthropic_base_url = sim_server.base_url();
    // Usage recorded in the simulator shows a tick later, not an hour later.
    config.usage_poll_interval = std::time::Duration::ZERO;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let urls = queues::create_all(&sqs, STAGE)
        .await
        .map_err(|e| e.to_string())?;
    let queue = |id: &str| -> Result<WorkQueue, String> {
        let url = urls.get(id).ok_or(format!("template has no {id}"))?;
        Ok(WorkQueue::new(sqs.clone(), url.clone()))
    };
    let dispatcher = Dispatcher {
        config: config.clone(),
        hub: claresia_aws::HubStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            config.hub_table.clone(),
        ),
        polls: queue("PollQueue")?,
        sweeps: queue("SweepQueue")?,
        metrics: claresia_api::metrics::Metrics::stdout(STAGE),
    };
    let worker_timeout = std::time::Duration::from_secs(60);
    let poll_mapping = EventSourceMapping::new(queue("PollQueue")?, worker_timeout);
    let sweep_mapping = EventSourceMapping::new(queue("SweepQueue")?, worker_timeout);
    let app = Arc::new(App::new(config, &sdk).map_err(|e| e.to_string())?);
    let signer = Arc::new(DevSigner::from_env());
    let tenant_token = signer.sign(
        "portal-admin@dainese",
        &[("claresia:tenant", "dainese")],
        86_400,
    );
    let sub_tenant_token = signer.sign(
        "portal-admin@dainese-eng",
        &[("claresia:tenant", "dainese-eng")],
        86_400,
    );
    let enterprise_token = signer.sign(
        "portal-admin@ducati",
        &[("claresia:tenant", "ducati")],
        86_400,
    );
    let operator_token = signer.sign(
        "operator@claresia",
        &[("claresia:role", "operator")],
        86_400,
    );

    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .map_err(|e| format!("API on {api_addr}: {e}"))?;
    let api = format!("http://{api_addr}");
    let tick_secs: u64 = std::env::var("CLARESIA_TICK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(60);
    println!(
        r#"
Claresia connector running locally
  API                 {api}   (dev gateway: verifies JWTs like API Gateway)
  Anthropic simulator {sim}   (controls under {sim}/_sim/state)
  moto                {moto}   (DynamoDB + Secrets Manager + SQS)
  hub table           {table}

Demo keys (simulator only):
  good                   {good}
  rotated (good)         {rotated}
  no Audit:read          {noaudit}
  zero-retention off     {nozr}
  zero-retention unknown {unknownzr}
  revoked (401)          {revoked}
  Claude Enterprise      {enterprise}   (org Ducati Motor Holding, 3 RBAC groups)
  Enterprise, partial    {partial}   (without read:analytics, read:compliance_activities)

The four tokens (24 h): paste these lines into the shell you run the README's curl commands in.
export TOKEN={tenant_token}    # tenant dainese
export SUB_TOKEN={sub_tenant_token}    # its sub-tenant dainese-eng, once dainese registers it (step 7b)
export ENT_TOKEN={enterprise_token}    # tenant ducati, the Claude Enterprise walkthrough
export OPERATOR_TOKEN={operator_token}    # a Claresia operator: any tenant, and the namespace routes

Try:
  curl -s -X PUT {api}/tenants/dainese/connection -H "Authorization: Bearer $TOKEN" \
       -H 'content-type: application/json' -d '{{"admin_api_key": "{good} "}}'
  curl -s {api}/tenants/dainese/connection -H "Authorization: Bearer $TOKEN"

Every {tick_secs} s (CLARESIA_TICK_SECONDS) the dispatcher enqueues one item per tenant on moto's SQS and the
audit poller and publish sweeper take them, as their event source mappings would. Emit skill runs with
  curl -s -X POST {sim}/_sim/orgs/{org}/audit_events -H 'content-type: application/json' \
       -d '{{"invoke": {{"skill_name": "claresia-dainese-incident-postmortem", "count": 3, "record_id": "rec_abc123", "workspace_id": "{ws}"}}}}'
and read them a tick later:
  curl -s {api}/tenants/dainese/telemetry -H "Authorization: Bearer $TOKEN"

Ctrl-C stops everything.
"#,
        sim = sim_server.base_url(),
        moto = moto.endpoint(),
        table = app.config.hub_table,
        good = demo::GOOD_KEY,
        rotated = demo::ROTATED_KEY,
        noaudit = demo::NO_AUDIT_KEY,
        nozr = demo::NO_ZR_KEY,
        unknownzr = demo::UNKNOWN_ZR_KEY,
        revoked = demo::REVOKED_KEY,
        enterprise = demo::ENTERPRISE_KEY,
        partial = demo::ENTERPRISE_PARTIAL_KEY,
        org = demo::DAINESE_ORG_ID,
        ws = demo::WS_CORPORATE,
    );

    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        eprintln!("\nstopping …");
    };
    // The schedule's part, as in the deployed stack: every tick the dispatcher enqueues one item per
    // tenant (and per pending Hub) on moto's SQS FIFO queues, and the local event source mappings hand
    // them, 10 a batch, to the audit poller's and the publish sweeper's handler.
    let ticker = {
        let app = Arc::clone(&app);
        async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(tick_secs));
            let handler = move |event, deadline_ms| {
                let app = Arc::clone(&app);
                async move { app.handle_work(event, deadline_ms).await }
            };
            loop {
                every.tick().await;
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                match dispatcher.dispatch(now).await {
                    Ok(d) if d.polls_enqueued + d.sweeps_enqueued > 0 => eprintln!(
                        "dispatch: {} poll item(s), {} sweep item(s); oldest success {} s ago",
                        d.polls_enqueued, d.sweeps_enqueued, d.oldest_success_age_seconds
                    ),
                    Ok(_) => {}
                    Err(e) => eprintln!("dispatch failed: {e}"),
                }
                for (name, mapping) in [("poll", &poll_mapping), ("sweep", &sweep_mapping)] {
                    match mapping.drain(&handler).await {
                        Ok(deliveries) => {
                            let items: Vec<_> =
                                deliveries.iter().flat_map(|d| &d.batch.items).collect();
                            if !items.is_empty() {
                                let failed = items.iter().filter(|i| i.retry).count();
                                let events: u64 = deliveries
                                    .iter()
                                    .flat_map(|d| &d.batch.polls)
                                    .map(|p| p.events_ingested)
                                    .sum();
                                eprintln!(
                                    "{name} worker: {} item(s), {failed} to retry, {events} event(s) ingested",
                                    items.len()
                                );
                            }
                        }
                        Err(e) => eprintln!("{name} worker: {e}"),
                    }
                }
            }
        }
    };
    // Served and ticked side by side in this task (the mappings' futures borrow the handler).
    let serve =
        axum::serve(listener, gateway::router(app, signer)).with_graceful_shutdown(shutdown);
    tokio::select! {
        served = serve => served.map_err(|e| e.to_string())?,
        () = ticker => {}
    }
    drop(sim_server);
    drop(moto);
    Ok(())
}
