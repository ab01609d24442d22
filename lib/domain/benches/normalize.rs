//! Normalization throughput per core: audit events → `fn_telemetry_event`.

use std::collections::BTreeMap;
use std::hint::black_box;

use claresia_domain::telemetry::{normalize, Routing};
use claresia_domain::TenantSlug;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

fn events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "id": format!("auditevt_01JX3M7ZC4K8Q2W5N6P9R{i:06}"), "type": if i % 10 == 0 { "skill.failed" } else { "skill.invoked" },
                "created_at": "2026-11-22T10:15:02.120Z", "organization_id": "12345678-1234-5678-1234-567812345678",
                "workspace_id": if i % 2 == 0 { "wrkspc_eng" } else { "wrkspc_corp" },
                "actor": {"type": "user_actor", "user_id": "user_01TuVwXyZaBcDeFgH2JkLmN4", "email_address": "ana@dainese.example"},
                "skill": {"id": "skill_01J", "name": "claresia-dainese-incident-postmortem", "version": "1759178010641129"},
                "details": {"duration_ms": 2300, "cost_usd": 0.04, "input_tokens": 1840, "output_tokens": 912, "record_id": "rec_abc123",
                            "error": {"type": "tool_error", "message": "boom"}}
            })
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let t = |s: &str| TenantSlug::parse(s).unwrap();
    let routing = Routing {
        hub: Some(t("dainese")),
        published: BTreeMap::from([(
            "claresia-dainese-incident-postmortem".into(),
            (t("dainese"), "incident-postmortem".into()),
        )]),
        workspaces: BTreeMap::from([("wrkspc_eng".into(), t("dainese-eng"))]),
        ..Default::default()
    };
    let batch = events(1000);
    let now = time::OffsetDateTime::now_utc();
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("1000 audit events", |b| {
        b.iter(|| {
            for e in &batch {
                black_box(normalize(black_box(e), &routing, now));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
